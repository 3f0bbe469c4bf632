//! Stack high-water mark: paint the free RAM between the statics and the stack pointer at
//! boot, and later find how deep the stack reached. Gives the RAM figure that the ELF's
//! sections cannot: the firmware keeps its buffers on the stack.

use core::ptr::{addr_of, read_volatile, write_volatile};

const PAINT: u32 = 0xACE5_ACE5;
/// Left unpainted below the live stack pointer: the painting code's own frame.
const MARGIN: usize = 256;

unsafe extern "C" {
    /// End of `.bss`/`.uninit`: where the free RAM starts (cortex-m-rt's link.x).
    static __sheap: u32;
    /// Initial stack pointer: the top of RAM (cortex-m-rt's link.x).
    static _stack_start: u32;
}

fn bounds() -> (usize, usize) {
    (addr_of!(__sheap) as usize, addr_of!(_stack_start) as usize)
}

/// Paints the unused stack; call once, first thing in `main`.
pub fn paint() {
    let (bottom, _) = bounds();
    let sp = cortex_m::register::msp::read() as usize;
    let mut at = bottom;
    while at + MARGIN < sp {
        // SAFETY: [bottom, sp - MARGIN) is RAM that neither statics nor live frames use.
        unsafe { write_volatile(at as *mut u32, PAINT) };
        at += 4;
    }
}

/// Deepest stack use since [`paint`], and the RAM the stack may use, in bytes.
pub fn peak() -> (usize, usize) {
    let (bottom, top) = bounds();
    let mut at = bottom;
    // SAFETY: reads RAM between the statics and the stack top.
    while at < top && unsafe { read_volatile(at as *const u32) } == PAINT {
        at += 4;
    }
    (top - at, top - bottom)
}
