//! Starts the `[[source.serial]]` port tasks: the validated config mapped
//! to the driver's options, one task per port delivering into the store,
//! link states published on the [`LinkBoard`].

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use wardlink_config::{
    DataBits, FlowControl, LinesFormat, Parity, SerialField, SerialProtocol, SerialSource, StopBits,
};
use wardlink_devices::lines::{FieldRef, LineFormat, LineMapping, LinesOptions};
use wardlink_devices::medibus::PollerOptions;
use wardlink_devices::reading::ReadingLocation;
use wardlink_devices::serial::{self as port, Protocol, SerialOptions, StoreSink};
use wardlink_devices::Submitter;

use crate::links::LinkBoard;

/// The driver's options for a configured port.
pub fn options(s: &SerialSource) -> SerialOptions {
    let protocol = match s.protocol {
        SerialProtocol::Medibus => Protocol::Medibus(PollerOptions {
            poll_interval: s.poll_interval,
            silent_timeout: s.silent_timeout,
        }),
        SerialProtocol::Lines => Protocol::Lines {
            options: LinesOptions {
                format: match s.format {
                    LinesFormat::KeyValue => LineFormat::KeyValue,
                    LinesFormat::Csv => LineFormat::Csv {
                        separator: s.separator,
                    },
                },
                map: s
                    .map
                    .iter()
                    .map(|m| LineMapping {
                        field: match &m.field {
                            SerialField::Key(k) => FieldRef::Key(k.clone()),
                            SerialField::Column(c) => FieldRef::Column(*c),
                        },
                        code: m.code.clone(),
                        system: m.system.clone(),
                        unit: m.unit.clone(),
                        label: m.label.clone(),
                    })
                    .collect(),
                max_line_bytes: s.max_line_bytes,
            },
            silent_timeout: s.silent_timeout,
        },
    };
    SerialOptions {
        name: Arc::from(s.name.as_str()),
        path: s.path.clone(),
        baud: s.baud,
        data_bits: match s.data_bits {
            DataBits::Five => port::DataBits::Five,
            DataBits::Six => port::DataBits::Six,
            DataBits::Seven => port::DataBits::Seven,
            DataBits::Eight => port::DataBits::Eight,
        },
        parity: match s.parity {
            Parity::None => port::Parity::None,
            Parity::Even => port::Parity::Even,
            Parity::Odd => port::Parity::Odd,
        },
        stop_bits: match s.stop_bits {
            StopBits::One => port::StopBits::One,
            StopBits::Two => port::StopBits::Two,
        },
        flow_control: match s.flow_control {
            FlowControl::None => port::FlowControl::None,
            FlowControl::Software => port::FlowControl::Software,
            FlowControl::Hardware => port::FlowControl::Hardware,
        },
        protocol,
        reopen_backoff_min: s.reopen_backoff_min,
        reopen_backoff_max: s.reopen_backoff_max.max(s.reopen_backoff_min),
        device_id: s.device_id.clone(),
        location: ReadingLocation {
            ward: s.ward.clone(),
            room: s.room.clone(),
            bed: s.bed.clone(),
        },
    }
}

/// Spawn one task per configured serial port into `tasks`. A port that
/// cannot be opened does not stop the daemon: its task retries with
/// backoff and `wardlink status` shows it disconnected.
pub fn spawn(
    sources: &[SerialSource],
    submitter: &Submitter,
    links: &LinkBoard,
    shutdown: &CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) {
    for s in sources {
        let board = links.clone();
        let sink = StoreSink::new(
            Arc::from(s.name.as_str()),
            submitter.clone(),
            move |name: &str, state: &port::LinkState| board.set_serial(name, state),
        );
        tracing::info!(source = %s.name, path = %s.path.display(), "serial source starting");
        tasks.spawn(port::run_port(options(s), sink, shutdown.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_lines_port_maps_to_the_driver_options() -> Result<(), String> {
        let config = wardlink_config::from_toml_str(
            r#"
[[source.serial]]
name = "scale"
path = "/dev/ttyUSB3"
protocol = "lines"
format = "csv"
separator = ";"
baud = 38400
parity = "odd"
data_bits = 7
stop_bits = 2
flow_control = "software"
device_id = "SCALE-1"
ward = "ICU"
[[source.serial.map]]
column = 2
code = "MDC_ATTR_PT_WEIGHT"
unit = "kg"
"#,
            "t",
        )
        .map_err(|e| e.to_string())?;
        let o = options(&config.sources.serial[0]);
        assert_eq!(&*o.name, "scale");
        assert_eq!(o.baud, 38400);
        assert_eq!(o.parity, port::Parity::Odd);
        assert_eq!(o.data_bits, port::DataBits::Seven);
        assert_eq!(o.stop_bits, port::StopBits::Two);
        assert_eq!(o.flow_control, port::FlowControl::Software);
        assert_eq!(o.device_id.as_deref(), Some("SCALE-1"));
        assert_eq!(o.location.ward.as_deref(), Some("ICU"));
        let Protocol::Lines { options, .. } = o.protocol else {
            return Err("not lines".into());
        };
        assert_eq!(options.format, LineFormat::Csv { separator: ';' });
        assert_eq!(options.map[0].field, FieldRef::Column(2));
        assert_eq!(options.map[0].unit.as_deref(), Some("kg"));
        Ok(())
    }
}
