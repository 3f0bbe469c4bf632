/*
 * A QEMU TCG plugin that counts the guest instructions a process executes (user-mode
 * emulation): `cargo xtask bench --board B` loads it with
 * `qemu-aarch64 -plugin <this>.so`, and reads the count that it appends, at exit, to the file
 * named by the environment variable IAT_INSN_OUT as the line "<pid> <instructions>".
 *
 * Debian's qemu-user ships neither plugins nor qemu-plugin.h, so the few functions and types
 * used here are declared below, as QEMU's plugin API documents them (stable across 7.2-10.x).
 * The API version is given at build time (-DIAT_PLUGIN_VERSION): 1 for QEMU up to 8.2, 2 from
 * 9.0, which accept no other.
 *
 * Each translated block gets a callback that adds its instruction count when it runs. A block
 * left early by a fault is still counted whole; that happens a handful of times per run here.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#ifndef IAT_PLUGIN_VERSION
#error "build with -DIAT_PLUGIN_VERSION=<the QEMU plugin API version>"
#endif

#define EXPORT __attribute__((visibility("default")))

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
typedef struct qemu_info_t qemu_info_t;

enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS = 0 };

typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);

extern void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id,
                                                  qemu_plugin_vcpu_tb_trans_cb_t cb);
extern size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
extern void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb,
                                                 qemu_plugin_vcpu_udata_cb_t cb,
                                                 enum qemu_plugin_cb_flags flags, void *userdata);
extern void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb,
                                           void *userdata);

EXPORT int qemu_plugin_version = IAT_PLUGIN_VERSION;

static uint64_t executed;

static void on_exec(unsigned int vcpu_index, void *userdata)
{
    (void)vcpu_index;
    __atomic_fetch_add(&executed, (uint64_t)(uintptr_t)userdata, __ATOMIC_RELAXED);
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    qemu_plugin_register_vcpu_tb_exec_cb(tb, on_exec, QEMU_PLUGIN_CB_NO_REGS, (void *)(uintptr_t)n);
}

static void at_exit(qemu_plugin_id_t id, void *userdata)
{
    (void)id;
    (void)userdata;
    const char *path = getenv("IAT_INSN_OUT");
    FILE *out = path ? fopen(path, "a") : NULL;
    uint64_t n = __atomic_load_n(&executed, __ATOMIC_RELAXED);
    if (out) {
        fprintf(out, "%ld %llu\n", (long)getpid(), (unsigned long long)n);
        fclose(out);
    } else {
        fprintf(stderr, "insn-count: %llu instructions (set IAT_INSN_OUT to keep them)\n",
                (unsigned long long)n);
    }
}

EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    (void)info;
    (void)argc;
    (void)argv;
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
