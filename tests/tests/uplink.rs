//! virtio-net inside EL2 to the outside world: a host process on 127.0.0.1
//! exchanges data with a guest through chroma's uplink (QEMU user networking
//! on the board's NIC, bridged by the hypervisor into the VM's switch, host
//! forwards bound to 127.0.0.1).
//!
//! The test process echoes 1 MiB through netsvc's port 7 and checks it byte
//! for byte, then sends 4 MiB to the sink on port 9 and compares the
//! `len=<n> fnv64=<hex>` answer with the FNV-1a 64 it computes itself. netsvc
//! runs with `svc.sinks=1`, so the run ends on its own after the sink session.
//! The `armv7_` tests do the same with the 32-bit netsvc on the ARMv7 board.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use chroma_systest::{
    free_port, guest_image, guest_image_arm, start_with, Board, Outcome, Running,
};

const GUEST_IP: &str = "10.0.2.15";
const SERVER: &str = "svc.sinks=1 net.ip=10.0.2.15/24 net.tx=queued";
const ECHO_BYTES: usize = 1 << 20;
const SINK_BYTES: usize = 4 << 20;
/// The xorshift seed of the data sent to the sink.
const SINK_SEED: u64 = 7;

/// FNV-1a 64, as netsvc's `checksum.rs` computes it.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |state, &byte| {
        (state ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `length` bytes of the xorshift64 (13/7/17) stream netclient sends: each
/// state word gives 8 bytes, little-endian.
fn xorshift_bytes(seed: u64, length: usize) -> Vec<u8> {
    let mut state = if seed == 0 {
        0x9e37_79b9_7f4a_7c15
    } else {
        seed
    };
    let mut bytes = Vec::with_capacity(length + 8);
    while bytes.len() < length {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(length);
    bytes
}

/// The host side agrees with the guests: 16 MiB of seed 1 hash to the value
/// netsvc prints for netclient's transfer (tests/tests/net.rs), and one
/// flipped byte changes the hash.
#[test]
fn uplink_host_checksum_matches_the_guests() {
    let data = xorshift_bytes(1, 16 << 20);
    assert_eq!(format!("{:016x}", fnv1a64(&data)), "f32a39a9ee3e40c1");
    assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    let mut corrupted = data[..SINK_BYTES].to_vec();
    corrupted[SINK_BYTES / 2] ^= 1;
    assert_ne!(fnv1a64(&corrupted), fnv1a64(&data[..SINK_BYTES]));
}

/// netsvc behind the uplink: its 32-bit build on the ARMv7 board
/// (`board.is_arm()`, where a `[[vm]]` without `arch` is AArch32).
fn config(board: Board) -> String {
    let image = if board.is_arm() {
        guest_image_arm("netsvc")
    } else {
        guest_image("netsvc")
    };
    format!(
        "[[switch]]\nname = \"lan0\"\nuplink = true\n\n[[vm]]\nname = \"svc\"\nkernel = \"{}\"\nmemory = \"32M\"\ncmdline = \"{SERVER}\"\ncpus = [0]\n[[vm.net]]\nswitch = \"lan0\"\n",
        image.display()
    )
}

/// Connects to the echo service through the forward on `port`: QEMU's
/// forward accepts before the guest listens (and then drops the
/// connection), so a connection only counts once it echoes a probe.
fn connect_echo(port: u16, seconds: u64) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let tried = TcpStream::connect(("127.0.0.1", port)).and_then(|mut stream| {
            stream.set_read_timeout(Some(Duration::from_secs(3)))?;
            stream.write_all(b"probe\n")?;
            let mut answer = [0u8; 6];
            stream.read_exact(&mut answer)?;
            if &answer == b"probe\n" {
                Ok(stream)
            } else {
                Err(std::io::Error::other(format!("echo answered {answer:?}")))
            }
        });
        match tried {
            Ok(stream) => return stream,
            Err(error) if Instant::now() < deadline => {
                eprintln!(
                    "uplink: echo on 127.0.0.1:{port}, attempt {attempts}: {error}; retrying"
                );
                std::thread::sleep(Duration::from_millis(300));
            }
            Err(error) => panic!("no echo on 127.0.0.1:{port} after {attempts} attempts: {error}"),
        }
    }
}

/// Echoes `ECHO_BYTES` through `stream` (a writer thread, reading here) and
/// checks them byte for byte; returns the seconds it took.
fn echo_and_check(stream: TcpStream) -> f64 {
    let data: Vec<u8> = (0..ECHO_BYTES)
        .map(|i| (i * 7 + 3 + i / 251).to_le_bytes()[0])
        .collect();
    let start = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    let mut writer = stream.try_clone().expect("clone the echo stream");
    let sent = data.clone();
    let sender = std::thread::spawn(move || {
        for chunk in sent.chunks(16 * 1024) {
            writer.write_all(chunk)?;
        }
        writer.flush()
    });
    let mut reader = stream;
    let mut received = Vec::with_capacity(ECHO_BYTES);
    let mut buffer = vec![0u8; 64 * 1024];
    while received.len() < ECHO_BYTES {
        match reader.read(&mut buffer) {
            Ok(0) => panic!(
                "echo connection closed after {} of {ECHO_BYTES} bytes",
                received.len()
            ),
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(error) => panic!(
                "echo read after {} of {ECHO_BYTES} bytes: {error}",
                received.len()
            ),
        }
    }
    sender.join().expect("echo writer").expect("echo write");
    let seconds = start.elapsed().as_secs_f64();
    if let Some(at) = received
        .iter()
        .zip(&data)
        .position(|(got, sent)| got != sent)
    {
        panic!(
            "echo differs at byte {at}: got {:02x?}, sent {:02x?}",
            &received[at..(at + 16).min(ECHO_BYTES)],
            &data[at..(at + 16).min(ECHO_BYTES)]
        );
    }
    assert_eq!(
        received.len(),
        ECHO_BYTES,
        "echo returned more than was sent"
    );
    let _ = reader.shutdown(Shutdown::Both);
    seconds
}

/// Sends `data` to the sink through the forward on `port`, shuts the write
/// side and returns the answer line; retries the connection while the forward
/// refuses or drops it before any data went through.
fn sink(port: u16, data: &[u8], seconds: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let mut stream = match TcpStream::connect(("127.0.0.1", port)) {
            Ok(stream) => stream,
            Err(error) if Instant::now() < deadline => {
                eprintln!("uplink: sink on 127.0.0.1:{port}: {error}; retrying");
                std::thread::sleep(Duration::from_millis(300));
                continue;
            }
            Err(error) => panic!("cannot connect to the sink on 127.0.0.1:{port}: {error}"),
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("read timeout");
        stream
            .set_write_timeout(Some(Duration::from_secs(20)))
            .expect("write timeout");
        stream.write_all(data).expect("send to the sink");
        stream
            .shutdown(Shutdown::Write)
            .expect("shut the write side");
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .expect("read the sink's answer");
        return answer;
    }
}

/// Boots netsvc behind the uplink on `board`, echoes 1 MiB and sinks 4 MiB
/// from the host, and returns the run's outcome once netsvc powered itself
/// off.
fn exchange(name: &str, board: Board, extra: &[&str]) -> Outcome {
    let echo_port = free_port();
    let mut sink_port = free_port();
    while sink_port == echo_port {
        sink_port = free_port();
    }
    let echo_forward = format!("{echo_port}:{GUEST_IP}:7");
    let sink_forward = format!("{sink_port}:{GUEST_IP}:9");
    let mut options = vec!["--forward", &echo_forward, "--forward", &sink_forward];
    options.extend_from_slice(extra);
    let mut run: Running = start_with(name, &config(board), board, &options);
    // Standalone (not under `cargo xtask test`) the run builds first.
    run.wait_for("svc", "netsvc: link up", 300);
    let booted = run.elapsed();

    let echo_seconds = echo_and_check(connect_echo(echo_port, 20));

    let data = xorshift_bytes(SINK_SEED, SINK_BYTES);
    let expected = format!("{:016x}", fnv1a64(&data));
    let start = Instant::now();
    let answer = sink(sink_port, &data, 20);
    let sink_seconds = start.elapsed().as_secs_f64();
    assert_eq!(
        answer,
        format!("len={SINK_BYTES} fnv64={expected}\n"),
        "the sink's answer differs from the host's checksum"
    );
    run.wait_for(
        "svc",
        &format!("netsvc: sink received {SINK_BYTES} bytes fnv64={expected}"),
        10,
    );
    // Ctrl-A c prints the uplink's counters with the VMs' NIC counters.
    run.type_text("\x01c");
    run.wait_for("chroma", "switch lan0 uplink port 1:", 10);
    eprintln!(
        "uplink: {name}: link up {booted:.1} s after start; echo {} KiB in {echo_seconds:.2} s, sink {} KiB in {sink_seconds:.2} s",
        ECHO_BYTES / 1024,
        SINK_BYTES / 1024
    );

    // svc.sinks=1: netsvc powers off about a second after the session.
    let outcome = run.finish(60);
    outcome.assert_vm_never_printed("svc", "FAIL");
    outcome.assert_vm_never_printed("svc", "connection lost");
    outcome.assert_vm_printed_containing("svc", "netsvc: done");
    outcome.assert_stopped("svc", "powered off");
    outcome.assert_all_stopped(1, 0);
    outcome.assert_success();
    let counters = outcome
        .hypervisor_lines()
        .into_iter()
        .find(|line| line.contains("vm svc net0") && line.contains("traps/pkt"))
        .unwrap_or_else(|| panic!("no counter line for svc's NIC:\n{}", outcome.stdout))
        .to_owned();
    // At least the 5 MiB of payload came in (plus the echo going out).
    let rx_bytes: u64 = counters
        .split("rx ")
        .nth(1)
        .and_then(|rest| rest.split(" pkts ").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|bytes| bytes.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the rx bytes of {counters:?}"));
    assert!(
        rx_bytes >= (ECHO_BYTES + SINK_BYTES) as u64,
        "svc's NIC received only {rx_bytes} bytes: {counters}"
    );
    // The end-of-run report has the uplink's counters too (printed after
    // the VM lines, before the summary): everything svc received came in
    // through the uplink, nothing from outside was malformed.
    let uplink = outcome
        .hypervisor_lines()
        .into_iter()
        .rev()
        .find(|line| line.contains("switch lan0 uplink port 1:"))
        .unwrap_or_else(|| panic!("no uplink counter line:\n{}", outcome.stdout))
        .to_owned();
    let uplink_in_bytes: u64 = uplink
        .split("tx ")
        .nth(1)
        .and_then(|rest| rest.split(" pkts ").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|bytes| bytes.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the tx bytes of {uplink:?}"));
    assert!(
        uplink_in_bytes >= rx_bytes,
        "the uplink brought in {uplink_in_bytes} bytes, svc received {rx_bytes}: {uplink}"
    );
    assert!(
        uplink.contains("(too short 0, too long 0, rx errors 0)"),
        "{uplink}"
    );
    outcome
}

/// qemu-virt-aarch64 (GICv2, two CPUs) with a 60 s timeout.
fn aarch64_board() -> Board {
    Board {
        timeout_seconds: 60,
        ..Board::new(2, 2)
    }
}

/// qemu-virt-arm (two CPUs) with a 60 s timeout: the 32-bit netsvc on the
/// ARMv7 hypervisor.
fn arm_board() -> Board {
    Board {
        timeout_seconds: 60,
        ..Board::arm(2)
    }
}

#[test]
fn host_echoes_1mib_and_sinks_4mib_through_the_uplink() {
    exchange("uplink_host", aarch64_board(), &[]);
}

#[test]
fn host_through_the_uplink_in_forced_colour_and_maintain_mode() {
    forced(exchange(
        "uplink_host_forced",
        aarch64_board(),
        &["--force-cache"],
    ));
}

/// The same on the ARMv7 hypervisor with the 32-bit netsvc (issue 11).
#[test]
fn armv7_host_echoes_1mib_and_sinks_4mib_through_the_uplink() {
    exchange("armv7_uplink_host", arm_board(), &[]);
}

/// The same on the ARMv7 hypervisor in the forced cache mode.
#[test]
fn armv7_host_through_the_uplink_in_forced_colour_and_maintain_mode() {
    forced(exchange(
        "armv7_uplink_host_forced",
        arm_board(),
        &["--force-cache"],
    ));
}

/// Panics unless the run's log shows the forced cache policy.
fn forced(outcome: Outcome) {
    assert!(
        outcome
            .hypervisor_lines()
            .iter()
            .any(|line| line.contains("ColourAndMaintain (forced)")),
        "the forced policy was not in force:\n{}",
        outcome.hypervisor_lines().join("\n")
    );
}
