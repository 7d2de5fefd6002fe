//! `wardlink simulate <device>`: realistic equipment for tests and demos.

use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use wardlink_devices::sim::bed_sensors::{self, BedSensors, SensorKind};

use super::{mqtt_host_port, on_runtime, EXIT_CHECK_FAILED, EXIT_RUNTIME};

/// The simulators.
#[derive(Debug, Subcommand)]
pub enum SimulateCommand {
    /// Bed occupancy mats, bed scales and vital-sign sensors of one ward
    /// publishing to an MQTT broker at QoS 1 (topics
    /// hospital/WARD/bed/N/{occupancy,weight,vitals}). --print-config prints
    /// the [[source.mqtt]] that reads them.
    BedSensors(BedSensorsArgs),
    /// A Dräger MEDIBUS ventilator on a pseudo-terminal: prints the path of
    /// its port (one line per ventilator), to put in a [[source.serial]]
    /// `path`, and answers polls with realistic values until Ctrl-C.
    Medibus(crate::cli::SimulateMedibus),
    /// An HL7 v2 sender (a monitor's ORU^R01 vitals and a HIS's ADT) over
    /// MLLP to --to HOST:PORT: prints each message's control id and the
    /// acknowledgement code, and a summary; exits 1 if any message was not
    /// accepted (AE/AR, no answer).
    Hl7(crate::cli::SimulateHl7),
}

/// `simulate bed-sensors` options.
#[derive(Debug, Args)]
pub struct BedSensorsArgs {
    /// The broker, e.g. mqtt://127.0.0.1:1883.
    #[arg(long, value_name = "URL", required_unless_present = "print_config")]
    pub mqtt: Option<String>,
    /// Ward name used in the topics.
    #[arg(long, default_value = "ICU")]
    pub ward: String,
    /// Number of beds.
    #[arg(long, default_value_t = 8)]
    pub beds: u32,
    /// Messages per second in total; 0 = as fast as the broker acknowledges.
    #[arg(long, default_value_t = 4.0)]
    pub rate: f64,
    /// Stop after this many messages (0 = until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    pub count: u64,
    /// Seed of the generator.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Only these sensor kinds (repeat the flag; default: all).
    #[arg(long, value_enum)]
    pub only: Vec<Kind>,
    /// Do not print each message.
    #[arg(long, short)]
    pub quiet: bool,
    /// Print the matching [[source.mqtt]] configuration and exit.
    #[arg(long)]
    pub print_config: bool,
    /// The source name used by --print-config.
    #[arg(long, default_value = "beds")]
    pub name: String,
}

/// A sensor kind for `--only`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Kind {
    /// Occupancy mats.
    Occupancy,
    /// Bed scales.
    Weight,
    /// Vital-sign sensors.
    Vitals,
}

/// Run a simulator.
pub fn simulate(cmd: SimulateCommand) -> ExitCode {
    match cmd {
        SimulateCommand::BedSensors(a) => bed_sensors_cmd(a),
        SimulateCommand::Hl7(o) => on_runtime(|stop| async move {
            match crate::simulate::hl7(o, stop).await {
                Ok(tally) => {
                    eprintln!("{tally}");
                    if tally.all_accepted() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(EXIT_CHECK_FAILED)
                    }
                }
                Err(e) => {
                    eprintln!("wardlink simulate: {e:#}");
                    ExitCode::from(EXIT_RUNTIME)
                }
            }
        }),
        SimulateCommand::Medibus(o) => on_runtime(|stop| async move {
            match crate::simulate::medibus(o, stop).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("wardlink simulate: {e:#}");
                    ExitCode::from(EXIT_RUNTIME)
                }
            }
        }),
    }
}

fn bed_sensors_cmd(a: BedSensorsArgs) -> ExitCode {
    if a.print_config {
        let url = a.mqtt.as_deref().unwrap_or("mqtt://127.0.0.1:1883");
        print!("{}", bed_sensors::source_config(&a.name, url));
        return ExitCode::SUCCESS;
    }
    let url = a.mqtt.clone().unwrap_or_default();
    let (host, port) = match mqtt_host_port(&url) {
        Ok(hp) => hp,
        Err(e) => {
            eprintln!("wardlink simulate: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let kinds: Vec<SensorKind> = a
        .only
        .iter()
        .map(|k| match k {
            Kind::Occupancy => SensorKind::Occupancy,
            Kind::Weight => SensorKind::Weight,
            Kind::Vitals => SensorKind::Vitals,
        })
        .collect();
    let mut sensors = BedSensors::new(&a.ward, a.beds, a.seed).with_kinds(&kinds);
    let quiet = a.quiet;
    eprintln!(
        "simulating {} beds of ward {} on {url}{}",
        a.beds.max(1),
        a.ward,
        if a.count > 0 {
            format!(", {} messages", a.count)
        } else {
            ", until Ctrl-C".into()
        }
    );
    on_runtime(|stop| async move {
        let result = bed_sensors::publish(&host, port, &mut sensors, a.count, a.rate, stop, |m| {
            if !quiet {
                println!("{} {}", m.topic, String::from_utf8_lossy(&m.payload));
            }
        })
        .await;
        match result {
            Ok(acked) => {
                eprintln!("published; the broker acknowledged {acked} messages");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("wardlink simulate: {e}");
                ExitCode::from(EXIT_RUNTIME)
            }
        }
    })
}
