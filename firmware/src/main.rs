//! The sensor-node application: sample, compute features, send frames, feed the watchdog.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use firmware::board;
use firmware::node::{Node, PERIOD_SAMPLES, SAMPLE_RATE_HZ, node_id};
use firmware::peripherals::watchdog::Watchdog;
use sensors::bme280::Bme280;

#[cfg(not(any(cap_uart_pl011, cap_usart_stm32f4)))]
compile_error!("the board has no UART driver capability (`uart_pl011`, `usart_stm32f4`)");
#[cfg(not(any(
    cap_sim_sensors,
    all(cap_i2c_stm32f4, cap_adc_stm32f4, cap_cycle_counter)
)))]
compile_error!(
    "the board has no sensor capability (`sim_sensors`, or `i2c_stm32f4` + `adc_stm32f4` + `cycle_counter`)"
);

/// Polls of the UART for the agent's hello ack: well over a host round trip under QEMU,
/// about half a second on a 16 MHz board.
const HELLO_ACK_POLLS: u32 = 2_000_000;

#[entry]
fn main() -> ! {
    firmware::stack::paint();
    defmt::info!(
        "node {=str}: firmware {=str}",
        board::NAME,
        env!("CARGO_PKG_VERSION")
    );
    let (mut watchdog, reset_cause) = Watchdog::start(board::CPU_HZ);
    defmt::info!("reset cause: {}", reset_cause);

    // SAFETY: the board file names this PL011 as the frame UART; nothing else touches it.
    #[cfg(cap_uart_pl011)]
    let uart = unsafe {
        firmware::peripherals::pl011::Pl011::new(
            board::FRAME_UART_BASE,
            board::CPU_HZ,
            board::FRAME_UART_BAUD,
        )
    };

    // SAFETY: the board file names this USART as the frame UART; nothing else touches it.
    #[cfg(cap_usart_stm32f4)]
    let uart = unsafe {
        firmware::peripherals::stm32f4::Usart::new(
            board::FRAME_UART_BASE,
            board::FRAME_UART_PINS,
            board::CPU_HZ,
            board::FRAME_UART_BAUD,
        )
    };

    // SAFETY: the BME280's bus from the board file; only the driver uses it.
    #[cfg(cap_i2c_stm32f4)]
    let i2c = unsafe {
        firmware::peripherals::stm32f4::I2c::new(
            board::BME280_I2C_BASE,
            board::BME280_I2C_PINS,
            board::CPU_HZ,
            board::BME280_I2C_HZ,
        )
    };

    // SAFETY: the microphone's ADC from the board file; the core peripherals are taken once.
    #[cfg(all(cap_adc_stm32f4, cap_cycle_counter))]
    let mut microphone = unsafe {
        let mut core = cortex_m::Peripherals::take().unwrap();
        firmware::peripherals::stm32f4::AdcMicrophone::new(
            board::MICROPHONE_ADC_BASE,
            board::MICROPHONE_PINS,
            board::MICROPHONE_ADC_CHANNEL,
            board::CPU_HZ,
            SAMPLE_RATE_HZ,
            &mut core.DCB,
            &mut core.DWT,
        )
    };

    #[cfg(cap_sim_sensors)]
    let (i2c, mut microphone) = (
        sensors::sim::SimBme280::new(board::BME280_ADDRESS.unwrap_or(0x76)),
        sensors::sim::SimMicrophone::new(SAMPLE_RATE_HZ),
    );

    let bme280 = board::BME280_ADDRESS.map(|address| Bme280::new(i2c, address));
    let mut node = Node::new(bme280, uart, node_id(board::NAME), reset_cause);
    node.start(board::SIMULATED);
    node.await_hello_ack(HELLO_ACK_POLLS);

    let mut samples = [0i16; PERIOD_SAMPLES];
    loop {
        microphone.fill(&mut samples);
        let report = node.cycle(&samples);
        match report.environment {
            Some(env) => defmt::info!(
                "cycle {=u32}: {=i32} cdegC, {=u32} m%RH, {=u32} Pa; LAeq {=i16} LZeq {=i16} cdB; {=u32} frames",
                report.cycle,
                env.temperature_centi_c,
                env.humidity_milli_pct.unwrap_or(0),
                env.pressure_pa.unwrap_or(0),
                report.laeq_centi_db,
                report.lzeq_centi_db,
                report.frames_sent
            ),
            None => defmt::info!(
                "cycle {=u32}: no environment; LAeq {=i16} LZeq {=i16} cdB; {=u32} frames",
                report.cycle,
                report.laeq_centi_db,
                report.lzeq_centi_db,
                report.frames_sent
            ),
        }
        watchdog.feed();
        if Some(node.cycles()) == board::EXIT_AFTER_CYCLES {
            defmt::info!(
                "done after {=u32} cycles, {=u32} frames",
                node.cycles(),
                node.frames_sent()
            );
            let (used, free) = firmware::stack::peak();
            defmt::info!("stack peak {=usize} B of {=usize} B", used, free);
            firmware::exit(0);
        }
    }
}
