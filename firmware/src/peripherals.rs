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

        fn poll_byte(&mut self) -> Option<u8> {
            self.try_read()
        }
    }
}

/// Stellaris LM3S watchdog: resets the chip if not fed within two seconds.
#[cfg(cap_watchdog_lm3s)]
pub mod watchdog {
    use core::ptr::{read_volatile, write_volatile};

    use node_link::ResetCause;

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

    use node_link::ResetCause;

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

/// STM32F4 GPIO, USART, I2C (v1) and ADC at register level: enough for a node, with every
/// wait bounded so a dead bus becomes an error, not a hang.
#[cfg(any(cap_usart_stm32f4, cap_i2c_stm32f4, cap_adc_stm32f4))]
pub mod stm32f4 {
    use core::ptr::{read_volatile, write_volatile};

    use embedded_hal::i2c::{ErrorKind, ErrorType, NoAcknowledgeSource, Operation};

    use crate::board::Pin;

    const RCC: usize = 0x4002_3800;
    const RCC_AHB1ENR: usize = RCC + 0x30;
    const RCC_APB1ENR: usize = RCC + 0x40;
    const RCC_APB2ENR: usize = RCC + 0x44;
    const GPIO: usize = 0x4002_0000;
    const GPIO_STRIDE: usize = 0x400;
    /// Register polls before a peripheral wait gives up (~ms at 16 MHz).
    const SPIN: u32 = 100_000;

    fn read(addr: usize) -> u32 {
        // SAFETY: only called with STM32F4 peripheral register addresses.
        unsafe { read_volatile(addr as *const u32) }
    }

    fn write(addr: usize, value: u32) {
        // SAFETY: as in `read`.
        unsafe { write_volatile(addr as *mut u32, value) }
    }

    fn modify(addr: usize, f: impl FnOnce(u32) -> u32) {
        write(addr, f(read(addr)));
    }

    /// Waits for `cond` on register `addr`; false if it never came.
    fn wait(addr: usize, cond: impl Fn(u32) -> bool) -> bool {
        (0..SPIN).any(|_| cond(read(addr)))
    }

    /// Turns a peripheral clock on: `bus` is 1 (APB1), 2 (APB2); `bit` its enable bit.
    pub fn enable_clock(bus: u8, bit: u32) {
        let reg = if bus == 1 { RCC_APB1ENR } else { RCC_APB2ENR };
        modify(reg, |v| v | 1 << bit);
    }

    /// Routes a pin to its peripheral (alternate function) or to the ADC (analog).
    pub fn configure_pin(pin: Pin, open_drain: bool) {
        modify(RCC_AHB1ENR, |v| v | 1 << pin.port);
        let base = GPIO + pin.port as usize * GPIO_STRIDE;
        let n = pin.number as u32;
        let mode = if pin.alternate.is_some() { 0b10 } else { 0b11 };
        modify(base, |v| (v & !(0b11 << (2 * n))) | mode << (2 * n)); // MODER
        if open_drain {
            modify(base + 0x04, |v| v | 1 << n); // OTYPER
            modify(base + 0x0C, |v| (v & !(0b11 << (2 * n))) | 0b01 << (2 * n)); // pull-up
        }
        modify(base + 0x08, |v| v | 0b10 << (2 * n)); // OSPEEDR: fast
        if let Some(af) = pin.alternate {
            let afr = base + if n < 8 { 0x20 } else { 0x24 };
            let shift = 4 * (n % 8);
            modify(afr, |v| (v & !(0xF << shift)) | (af as u32) << shift);
        }
    }

    /// USART (8N1) for frames.
    #[cfg(cap_usart_stm32f4)]
    pub struct Usart {
        base: usize,
    }

    #[cfg(cap_usart_stm32f4)]
    impl Usart {
        /// # Safety
        /// `base` must be an STM32F4 USART on APB1 (USART2/3, UART4/5), owned by nothing else.
        pub unsafe fn new(base: usize, pins: &[Pin], clock_hz: u32, baud: u32) -> Self {
            // APB1 enable bit of USART2..UART5 follows from the address (0x4000_4400 -> 17).
            enable_clock(1, 17 + ((base - 0x4000_4400) / 0x400) as u32);
            for &pin in pins {
                configure_pin(pin, false);
            }
            write(base + 0x08, (clock_hz + baud / 2) / baud); // BRR, oversampling by 16
            write(base + 0x0C, 1 << 13 | 1 << 3 | 1 << 2); // CR1: UE, TE, RE
            Usart { base }
        }
    }

    #[cfg(cap_usart_stm32f4)]
    impl crate::node::FrameSink for Usart {
        fn send(&mut self, bytes: &[u8]) {
            for &b in bytes {
                wait(self.base, |sr| sr & 1 << 7 != 0); // TXE
                write(self.base + 0x04, b as u32);
            }
        }

        fn poll_byte(&mut self) -> Option<u8> {
            (read(self.base) & 1 << 5 != 0).then(|| read(self.base + 0x04) as u8) // RXNE
        }
    }

    /// I2C master (STM32F4 I2C v1), standard mode, polling.
    #[cfg(cap_i2c_stm32f4)]
    pub struct I2c {
        base: usize,
    }

    #[cfg(cap_i2c_stm32f4)]
    mod i2c_reg {
        pub const CR1: usize = 0x00;
        pub const CR2: usize = 0x04;
        pub const DR: usize = 0x10;
        pub const SR1: usize = 0x14;
        pub const SR2: usize = 0x18;
        pub const CCR: usize = 0x1C;
        pub const TRISE: usize = 0x20;
        pub const START: u32 = 1 << 8;
        pub const STOP: u32 = 1 << 9;
        pub const ACK: u32 = 1 << 10;
        pub const SB: u32 = 1 << 0;
        pub const ADDR: u32 = 1 << 1;
        pub const BTF: u32 = 1 << 2;
        pub const RXNE: u32 = 1 << 6;
        pub const TXE: u32 = 1 << 7;
        pub const AF: u32 = 1 << 10;
    }

    #[cfg(cap_i2c_stm32f4)]
    impl I2c {
        /// # Safety
        /// `base` must be an STM32F4 I2C (I2C1..3 on APB1), owned by nothing else.
        pub unsafe fn new(base: usize, pins: &[Pin], clock_hz: u32, bus_hz: u32) -> Self {
            use i2c_reg::*;
            enable_clock(1, 21 + ((base - 0x4000_5400) / 0x400) as u32);
            for &pin in pins {
                configure_pin(pin, true);
            }
            let mhz = clock_hz / 1_000_000;
            write(base + CR1, 1 << 15); // SWRST: clear a bus state left from before a reset
            write(base + CR1, 0);
            write(base + CR2, mhz);
            write(base + CCR, (clock_hz / (2 * bus_hz)).max(4)); // standard mode
            write(base + TRISE, mhz + 1);
            write(base + CR1, 1); // PE
            I2c { base }
        }

        fn fail(&mut self, kind: ErrorKind) -> ErrorKind {
            use i2c_reg::*;
            modify(self.base + SR1, |v| v & !AF);
            modify(self.base + CR1, |v| v | STOP);
            kind
        }

        fn start(&mut self, address: u8, read_mode: bool) -> Result<(), ErrorKind> {
            use i2c_reg::*;
            modify(self.base + CR1, |v| v | START);
            if !wait(self.base + SR1, |s| s & SB != 0) {
                return Err(self.fail(ErrorKind::Bus));
            }
            write(self.base + DR, (address as u32) << 1 | read_mode as u32);
            let ok = wait(self.base + SR1, |s| s & (ADDR | AF) != 0);
            if !ok || read(self.base + SR1) & AF != 0 {
                return Err(self.fail(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address)));
            }
            Ok(())
        }

        fn clear_addr(&mut self) {
            read(self.base + i2c_reg::SR1);
            read(self.base + i2c_reg::SR2);
        }

        fn write_bytes(&mut self, bytes: &[u8]) -> Result<(), ErrorKind> {
            use i2c_reg::*;
            self.clear_addr();
            for &b in bytes {
                if !wait(self.base + SR1, |s| s & (TXE | AF) != 0)
                    || read(self.base + SR1) & AF != 0
                {
                    return Err(self.fail(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Data)));
                }
                write(self.base + DR, b as u32);
            }
            if !wait(self.base + SR1, |s| s & BTF != 0) {
                return Err(self.fail(ErrorKind::Bus));
            }
            Ok(())
        }

        /// Reads with ACK on every byte but the last, and STOP requested while the last
        /// byte is on the wire (reference manual RM0383, 18.3.3, "Master receiver").
        fn read_bytes(&mut self, buf: &mut [u8]) -> Result<(), ErrorKind> {
            use i2c_reg::*;
            let n = buf.len();
            if n == 1 {
                modify(self.base + CR1, |v| v & !ACK);
                self.clear_addr();
                modify(self.base + CR1, |v| v | STOP);
            } else {
                modify(self.base + CR1, |v| v | ACK);
                self.clear_addr();
            }
            for (i, b) in buf.iter_mut().enumerate() {
                if !wait(self.base + SR1, |s| s & RXNE != 0) {
                    return Err(self.fail(ErrorKind::Bus));
                }
                if n > 1 && i == n - 2 {
                    modify(self.base + CR1, |v| (v & !ACK) | STOP);
                }
                *b = read(self.base + DR) as u8;
            }
            Ok(())
        }
    }

    #[cfg(cap_i2c_stm32f4)]
    impl ErrorType for I2c {
        type Error = ErrorKind;
    }

    #[cfg(cap_i2c_stm32f4)]
    impl embedded_hal::i2c::I2c for I2c {
        fn transaction(&mut self, address: u8, ops: &mut [Operation<'_>]) -> Result<(), ErrorKind> {
            let count = ops.len();
            for (i, op) in ops.iter_mut().enumerate() {
                match op {
                    Operation::Write(bytes) => {
                        self.start(address, false)?;
                        self.write_bytes(bytes)?;
                    }
                    Operation::Read(buf) if !buf.is_empty() => {
                        self.start(address, true)?;
                        self.read_bytes(buf)?; // requests STOP itself
                        continue;
                    }
                    Operation::Read(_) => {}
                }
                if i + 1 == count {
                    modify(self.base + i2c_reg::CR1, |v| v | i2c_reg::STOP);
                }
            }
            Ok(())
        }
    }

    /// A microphone on an ADC channel, sampled at a fixed rate paced by the cycle counter.
    #[cfg(all(cap_adc_stm32f4, cap_cycle_counter))]
    pub struct AdcMicrophone {
        base: usize,
        cycles_per_sample: u32,
    }

    #[cfg(all(cap_adc_stm32f4, cap_cycle_counter))]
    impl AdcMicrophone {
        /// # Safety
        /// `base` must be ADC1 of an STM32F4, owned by nothing else; `dwt` enables CYCCNT.
        pub unsafe fn new(
            base: usize,
            pins: &[Pin],
            channel: u8,
            clock_hz: u32,
            sample_rate_hz: u32,
            dcb: &mut cortex_m::peripheral::DCB,
            dwt: &mut cortex_m::peripheral::DWT,
        ) -> Self {
            enable_clock(2, 8); // ADC1EN
            for &pin in pins {
                configure_pin(pin, false);
            }
            if channel < 10 {
                write(base + 0x10, 0b011 << (3 * channel as u32)); // SMPR2: 56-cycle sampling
            }
            write(base + 0x34, channel as u32); // SQR3: one conversion of `channel`
            write(base + 0x08, 1); // CR2: ADON
            dcb.enable_trace();
            dwt.enable_cycle_counter();
            AdcMicrophone {
                base,
                cycles_per_sample: clock_hz / sample_rate_hz,
            }
        }

        /// Fills `out` with 12-bit samples centred on zero and scaled to 16 bits.
        pub fn fill(&mut self, out: &mut [i16]) {
            let mut next = cortex_m::peripheral::DWT::cycle_count();
            for s in out {
                while cortex_m::peripheral::DWT::cycle_count().wrapping_sub(next) as i32 <= 0 {}
                next = next.wrapping_add(self.cycles_per_sample);
                write(self.base + 0x08, 1 | 1 << 30); // ADON | SWSTART
                wait(self.base, |sr| sr & 1 << 1 != 0); // EOC
                let v = read(self.base + 0x4C) as i32 & 0xFFF;
                *s = ((v - 2048) << 4) as i16;
            }
        }
    }
}
