//! Register-level peripherals, each compiled in when a board declares its capability.

/// ARM PrimeCell UART (PL011), as in the Stellaris LM3S parts.
#[cfg(cap_uart_pl011)]
pub mod pl011 {
    use core::ptr::{read_volatile, write_volatile};

    const DR: usize = 0x000;
    const FR: usize = 0x018;
    const IBRD: usize = 0x024;
    const FBRD: usize = 0x028;
    const LCRH: usize = 0x02C;
    const CTL: usize = 0x030;
    const FR_RXFE: u32 = 1 << 4;
    const FR_TXFF: u32 = 1 << 5;

    pub struct Pl011 {
        base: usize,
    }

    impl Pl011 {
        /// # Safety
        /// `base` must be a PL011's register block, owned by nothing else.
        pub unsafe fn new(base: usize, clock_hz: u32, baud: u32) -> Self {
            let uart = Pl011 { base };
            // Divisor in 1/64ths: clock / (16 * baud), rounded.
            let div64 = (clock_hz as u64 * 4 + baud as u64 / 2) / baud as u64;
            uart.write(CTL, 0);
            uart.write(IBRD, (div64 >> 6) as u32);
            uart.write(FBRD, (div64 & 0x3F) as u32);
            uart.write(LCRH, 0b11 << 5 | 1 << 4); // 8 bits, FIFO on, no parity, 1 stop bit
            uart.write(CTL, 1 | 1 << 8 | 1 << 9); // UARTEN, TXE, RXE
            uart
        }

        pub fn write_all(&mut self, bytes: &[u8]) {
            for &b in bytes {
                while self.read(FR) & FR_TXFF != 0 {}
                self.write(DR, b as u32);
            }
        }

        pub fn try_read(&mut self) -> Option<u8> {
            (self.read(FR) & FR_RXFE == 0).then(|| self.read(DR) as u8)
        }

        fn read(&self, offset: usize) -> u32 {
            // SAFETY: `new`'s contract: a PL011 register block at `base`.
            unsafe { read_volatile((self.base + offset) as *const u32) }
        }

        fn write(&self, offset: usize, value: u32) {
            // SAFETY: as in `read`.
            unsafe { write_volatile((self.base + offset) as *mut u32, value) }
        }
    }

    impl crate::node::FrameSink for Pl011 {
        fn send(&mut self, bytes: &[u8]) {
            self.write_all(bytes);
        }
    }
}

/// Stellaris LM3S watchdog: resets the chip if not fed within two seconds.
#[cfg(cap_watchdog_lm3s)]
pub mod watchdog {
    use core::ptr::{read_volatile, write_volatile};

    use protocol::ResetCause;

    const WDT: usize = 0x4000_0000;
    const LOAD: usize = WDT;
    const CTL: usize = WDT + 0x008;
    const ICR: usize = WDT + 0x00C;
    const LOCK: usize = WDT + 0xC00;
    const UNLOCK: u32 = 0x1ACC_E551;
    const SYSCTL_RESC: usize = 0x400F_E05C;
    const SYSCTL_RCGC0: usize = 0x400F_E100;

    pub struct Watchdog;

    impl Watchdog {
        /// Starts the watchdog; returns it and why the chip last reset.
        pub fn start(cpu_hz: u32) -> (Watchdog, ResetCause) {
            // SAFETY: fixed LM3S6965 system-control and watchdog registers; this is their
            // only user.
            unsafe {
                let resc = read_volatile(SYSCTL_RESC as *const u32);
                write_volatile(SYSCTL_RESC as *mut u32, 0);
                let rcgc0 = read_volatile(SYSCTL_RCGC0 as *const u32);
                write_volatile(SYSCTL_RCGC0 as *mut u32, rcgc0 | 1 << 3);
                write_volatile(LOCK as *mut u32, UNLOCK);
                // Interrupt at the first timeout, reset at the second: two periods of 1 s.
                write_volatile(LOAD as *mut u32, cpu_hz);
                write_volatile(CTL as *mut u32, 0b11);
                write_volatile(LOCK as *mut u32, 0);
                let cause = match resc {
                    r if r & 1 << 3 != 0 => ResetCause::Watchdog,
                    r if r & 1 << 4 != 0 => ResetCause::Software,
                    r if r & 0b11 != 0 => ResetCause::PowerOn,
                    _ => ResetCause::Unknown,
                };
                (Watchdog, cause)
            }
        }

        pub fn feed(&mut self) {
            // SAFETY: writing ICR reloads the counter; the register is unlocked for it.
            unsafe {
                write_volatile(LOCK as *mut u32, UNLOCK);
                write_volatile(ICR as *mut u32, 1);
                write_volatile(LOCK as *mut u32, 0);
            }
        }
    }
}

/// STM32 independent watchdog (IWDG), clocked by the 32 kHz LSI.
#[cfg(cap_watchdog_iwdg)]
pub mod watchdog {
    use core::ptr::{read_volatile, write_volatile};

    use protocol::ResetCause;

    const IWDG: usize = 0x4000_3000;
    const KR: usize = IWDG;
    const PR: usize = IWDG + 0x04;
    const RLR: usize = IWDG + 0x08;
    const RCC_CSR: usize = 0x4002_3874;

    pub struct Watchdog;

    impl Watchdog {
        pub fn start(_cpu_hz: u32) -> (Watchdog, ResetCause) {
            // SAFETY: fixed STM32F4 IWDG and RCC registers; this is their only user.
            unsafe {
                let csr = read_volatile(RCC_CSR as *const u32);
                write_volatile(RCC_CSR as *mut u32, csr | 1 << 24); // RMVF: clear the flags
                write_volatile(KR as *mut u32, 0x5555); // unlock PR and RLR
                write_volatile(PR as *mut u32, 0b011); // LSI / 32: 1 kHz
                write_volatile(RLR as *mut u32, 2000); // 2 s
                write_volatile(KR as *mut u32, 0xCCCC); // start
                let cause = match csr {
                    c if c & 1 << 29 != 0 => ResetCause::Watchdog,
                    c if c & 1 << 28 != 0 => ResetCause::Software,
                    c if c & 1 << 27 != 0 => ResetCause::PowerOn,
                    _ => ResetCause::Unknown,
                };
                (Watchdog, cause)
            }
        }

        pub fn feed(&mut self) {
            // SAFETY: the reload key only reloads the counter.
            unsafe { write_volatile(KR as *mut u32, 0xAAAA) }
        }
    }
}
