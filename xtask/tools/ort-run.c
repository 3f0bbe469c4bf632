/*
 * Runs an ONNX model with onnxruntime's shared library, single-threaded, a given number of
 * times on given inputs: the reference side of `cargo xtask bench --board B`, which counts
 * the instructions it executes under qemu-user (the count of `RUNS` runs minus that of one).
 *
 *   ort-run LIBONNXRUNTIME MODEL RUNS NAME=TYPE:D0xD1x...:RAWFILE...
 *
 * TYPE is f32, u8, i8, i32 or i64; RAWFILE holds the tensor's bytes, little-endian, C order.
 * The session is set up as models/tools/common.py's ort_session does it for the x86 bench:
 * one intra-op and one inter-op thread, sequential execution, every graph optimisation.
 *
 * The library comes from onnxruntime's PyPI wheel, which ships no C header: the entry points
 * used here are slots of its `OrtApi` table, whose order is append-only across releases; the
 * slot numbers below are those of onnxruntime_c_api.h, and API version 13 (1.13) is asked
 * for, which every later library serves.
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct OrtStatus OrtStatus;
typedef void *(*ort_fn)(void);
typedef struct {
    const void **(*GetApi)(uint32_t version);
    const char *(*GetVersionString)(void);
} OrtApiBase;

enum {
    GET_ERROR_MESSAGE = 2,
    CREATE_ENV = 3,
    CREATE_SESSION = 7,
    RUN = 9,
    CREATE_SESSION_OPTIONS = 10,
    SET_EXECUTION_MODE = 13,
    SET_LOG_SEVERITY = 22,
    SET_OPTIMIZATION_LEVEL = 23,
    SET_INTRA_THREADS = 24,
    SET_INTER_THREADS = 25,
    GET_OUTPUT_COUNT = 31,
    GET_INPUT_NAME = 36,
    GET_OUTPUT_NAME = 37,
    CREATE_TENSOR = 49,
    CREATE_CPU_MEMORY_INFO = 69,
    GET_DEFAULT_ALLOCATOR = 78,
    RELEASE_VALUE = 96,
    ADD_CONFIG_ENTRY = 130,
};

static const void **api;

#define SLOT(type, index) ((type)api[index])

static void check(OrtStatus *status, const char *what)
{
    if (status) {
        const char *(*message)(const OrtStatus *) = SLOT(const char *(*)(const OrtStatus *), GET_ERROR_MESSAGE);
        fprintf(stderr, "ort-run: %s: %s\n", what, message(status));
        exit(1);
    }
}

static void *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "ort-run: cannot open %s\n", path);
        exit(1);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *data = malloc(n > 0 ? (size_t)n : 1);
    if (!data || fread(data, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "ort-run: cannot read %s\n", path);
        exit(1);
    }
    fclose(f);
    *len = (size_t)n;
    return data;
}

/* Element type: (ONNX code, bytes per element). */
static int element_type(const char *name, size_t *size)
{
    static const struct { const char *name; int code; size_t size; } types[] = {
        {"f32", 1, 4}, {"u8", 2, 1}, {"i8", 3, 1}, {"i32", 6, 4}, {"i64", 7, 8},
    };
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        if (strcmp(name, types[i].name) == 0) {
            *size = types[i].size;
            return types[i].code;
        }
    }
    fprintf(stderr, "ort-run: unknown element type `%s` (f32, u8, i8, i32, i64)\n", name);
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: ort-run LIBONNXRUNTIME MODEL RUNS NAME=TYPE:D0xD1x...:RAWFILE...\n");
        return 2;
    }
    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        fprintf(stderr, "ort-run: %s\n", dlerror());
        return 1;
    }
    const OrtApiBase *(*get_base)(void) = (const OrtApiBase *(*)(void))dlsym(lib, "OrtGetApiBase");
    if (!get_base) {
        fprintf(stderr, "ort-run: %s has no OrtGetApiBase\n", argv[1]);
        return 1;
    }
    api = get_base()->GetApi(13);
    if (!api) {
        fprintf(stderr, "ort-run: %s does not serve API version 13\n", argv[1]);
        return 1;
    }
    long runs = strtol(argv[3], NULL, 10);
    int n_inputs = argc - 4;

    void *env, *options, *session, *memory, *allocator;
    check(SLOT(OrtStatus *(*)(int, const char *, void **), CREATE_ENV)(3, "ort-run", &env), "CreateEnv");
    check(SLOT(OrtStatus *(*)(void **), CREATE_SESSION_OPTIONS)(&options), "CreateSessionOptions");
    check(SLOT(OrtStatus *(*)(void *, int), SET_INTRA_THREADS)(options, 1), "SetIntraOpNumThreads");
    check(SLOT(OrtStatus *(*)(void *, int), SET_INTER_THREADS)(options, 1), "SetInterOpNumThreads");
    check(SLOT(OrtStatus *(*)(void *, int), SET_EXECUTION_MODE)(options, 0), "SetSessionExecutionMode");
    check(SLOT(OrtStatus *(*)(void *, int), SET_LOG_SEVERITY)(options, 3), "SetSessionLogSeverityLevel");
    check(SLOT(OrtStatus *(*)(void *, int), SET_OPTIMIZATION_LEVEL)(options, 99), "SetSessionGraphOptimizationLevel");
    check(SLOT(OrtStatus *(*)(void *, const char *, const char *), ADD_CONFIG_ENTRY)(
              options, "session.intra_op.allow_spinning", "0"),
          "AddSessionConfigEntry");
    check(SLOT(OrtStatus *(*)(void *, const char *, void *, void **), CREATE_SESSION)(env, argv[2], options, &session),
          "CreateSession");
    check(SLOT(OrtStatus *(*)(int, int, void **), CREATE_CPU_MEMORY_INFO)(0, 0, &memory), "CreateCpuMemoryInfo");
    check(SLOT(OrtStatus *(*)(void **), GET_DEFAULT_ALLOCATOR)(&allocator), "GetAllocatorWithDefaultOptions");

    const char **input_names = calloc((size_t)n_inputs, sizeof *input_names);
    void **inputs = calloc((size_t)n_inputs, sizeof *inputs);
    for (int i = 0; i < n_inputs; i++) {
        char *spec = strdup(argv[4 + i]);
        char *eq = strchr(spec, '=');
        char *c1 = eq ? strchr(eq + 1, ':') : NULL;
        char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2) {
            fprintf(stderr, "ort-run: input `%s` is not NAME=TYPE:D0xD1x...:RAWFILE\n", argv[4 + i]);
            return 2;
        }
        *eq = *c1 = *c2 = 0;
        size_t esize;
        int code = element_type(eq + 1, &esize);
        int64_t dims[16];
        size_t rank = 0, count = 1;
        for (char *d = c1 + 1; *d && rank < 16;) {
            char *end;
            dims[rank] = strtoll(d, &end, 10);
            count *= (size_t)dims[rank++];
            d = *end == 'x' ? end + 1 : end;
            if (end == d && *d) {
                fprintf(stderr, "ort-run: bad shape in `%s`\n", argv[4 + i]);
                return 2;
            }
        }
        size_t len;
        void *data = read_file(c2 + 1, &len);
        if (len != count * esize) {
            fprintf(stderr, "ort-run: %s holds %zu bytes, the shape wants %zu\n", c2 + 1, len, count * esize);
            return 2;
        }
        input_names[i] = spec;
        check(SLOT(OrtStatus *(*)(void *, void *, size_t, const int64_t *, size_t, int, void **), CREATE_TENSOR)(
                  memory, data, len, dims, rank, code, &inputs[i]),
              "CreateTensorWithDataAsOrtValue");
    }

    size_t n_outputs;
    check(SLOT(OrtStatus *(*)(void *, size_t *), GET_OUTPUT_COUNT)(session, &n_outputs), "SessionGetOutputCount");
    char **output_names = calloc(n_outputs, sizeof *output_names);
    void **outputs = calloc(n_outputs, sizeof *outputs);
    for (size_t i = 0; i < n_outputs; i++) {
        check(SLOT(OrtStatus *(*)(void *, size_t, void *, char **), GET_OUTPUT_NAME)(session, i, allocator, &output_names[i]),
              "SessionGetOutputName");
    }
    (void)GET_INPUT_NAME;

    for (long r = 0; r < runs; r++) {
        check(SLOT(OrtStatus *(*)(void *, const void *, const char *const *, const void *const *, size_t,
                                  const char *const *, size_t, void **),
                   RUN)(session, NULL, input_names, (const void *const *)inputs, (size_t)n_inputs,
                        (const char *const *)output_names, n_outputs, outputs),
              "Run");
        for (size_t i = 0; i < n_outputs; i++) {
            SLOT(void (*)(void *), RELEASE_VALUE)(outputs[i]);
            outputs[i] = NULL;
        }
    }
    printf("ort-run: onnxruntime %s, %ld runs, %d inputs, %zu outputs\n", get_base()->GetVersionString(), runs,
           n_inputs, n_outputs);
    return 0;
}
