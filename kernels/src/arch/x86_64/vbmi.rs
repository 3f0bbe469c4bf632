//! 256-entry byte tables applied 64 bytes at a time with AVX-512 VBMI's two-table byte
//! permutation (`vpermi2b`: 128 entries per instruction, two of them and a blend on each
//! byte's top bit).

// Elsewhere the kernel is not built: `available` says no.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Whether this CPU runs [`lookup`].
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        !crate::arch::portable_requested()
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vbmi")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `dst[i] = table[src[i]]` for `i < min(src.len(), dst.len())`.
///
/// # Safety
/// The CPU must have what [`available`] checks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
pub unsafe fn lookup(table: &[u8; 256], src: &[u8], dst: &mut [u8]) {
    let n = src.len().min(dst.len());
    // SAFETY: the CPU has the features (the caller's contract). The table loads read bytes
    // `64 * q..64 * q + 64` of the 256-byte table. Each full step reads and writes bytes
    // `i..i + 64` with `i + 64 <= n`, inside both slices; the last step's masked load and
    // store touch only bytes `i..n` (masked-off bytes are not accessed).
    unsafe {
        let quarter = |q: usize| _mm512_loadu_si512(table.as_ptr().add(64 * q) as *const _);
        let (t0, t1, t2, t3) = (quarter(0), quarter(1), quarter(2), quarter(3));
        let look = |idx: __m512i| {
            // Bits 0-6 pick one of 128 entries of each half; bit 7 picks the half.
            let low = _mm512_permutex2var_epi8(t0, idx, t1);
            let high = _mm512_permutex2var_epi8(t2, idx, t3);
            _mm512_mask_blend_epi8(_mm512_movepi8_mask(idx), low, high)
        };
        let mut i = 0;
        while i + 64 <= n {
            let idx = _mm512_loadu_si512(src.as_ptr().add(i) as *const _);
            _mm512_storeu_si512(dst.as_mut_ptr().add(i) as *mut _, look(idx));
            i += 64;
        }
        if i < n {
            let mask = (1u64 << (n - i)) - 1;
            let idx = _mm512_maskz_loadu_epi8(mask, src.as_ptr().add(i) as *const _);
            _mm512_mask_storeu_epi8(dst.as_mut_ptr().add(i) as *mut _, mask, look(idx));
        }
    }
}
