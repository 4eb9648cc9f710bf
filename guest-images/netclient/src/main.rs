//! Test guest: pings a server, then sends it pseudo-random data over TCP.
//!
//! Bootargs (defaults in parentheses): `net.ip=` (10.0.2.16/24), `net.gw=`
//! (10.0.2.2), `client.server=` (10.0.2.15), `client.ping=N` (3) echo
//! requests, `client.mib=N` (16) MiB to send to the server's sink (port 9),
//! `client.seed=N` (1) for the xorshift64 byte stream, `client.stay=S` (0)
//! seconds to stay on the network (answering pings) after `done`. Prints one line per
//! ping reply, the transfer's checksums from both ends, the throughput, then
//! `netclient: done` and powers off. A refused connection is retried for up
//! to 10 s (the sink listens again only once its last session has closed).
//! A failure prints a line with `FAIL` and powers off.
//!
//! For long runs (`cargo xtask soak`): `client.loop=S` repeats the transfer
//! (a new connection each round, the pings only before the first) until S
//! seconds have passed since the link came up, printing a transfer line per
//! round and `netclient: rounds <n>` at the end; `client.reset` ends with
//! PSCI SYSTEM_RESET instead of powering off, so that the hypervisor
//! restarts the VM and it all begins again. A failure still powers off.
#![no_std]
#![no_main]
#![deny(clippy::undocumented_unsafe_blocks)]

extern crate alloc;

use alloc::vec;

use chroma_guest_netsvc::checksum::{Fnv64, XorShiftStream};
use chroma_guest_netsvc::irq;
use chroma_guest_netsvc::ping::Pinger;
use chroma_guest_netsvc::stack::{NetConfig, NetStack};
use chroma_guest_rt::args::BootArgs;
use chroma_guest_rt::{println, timer, Boot};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::wire::{Ipv4Address, Ipv4Cidr};

chroma_guest_rt::entry!(start);

/// The server's sink port.
const SINK_PORT: u16 = 9;
/// ICMP echo identifier ("NC").
const PING_IDENT: u16 = 0x4e43;
/// How long each echo request waits for its reply.
const PING_TIMEOUT_MS: u64 = 1000;
/// Echo requests the client sends, uncounted, until the server first
/// answers: both guests boot at the same time, and the server's network may
/// not be up when the client's is.
const WARM_UP_PINGS: u16 = 15;
/// How long the socket stays after TIME-WAIT, for its last ACK to leave.
const ACK_DRAIN_MS: u64 = 200;
/// How long a refused connection waits before it tries again.
const CONNECT_RETRY_MS: u64 = 500;
/// How long the connection may take to open (retries included).
const CONNECT_TIMEOUT_MS: u64 = 10_000;
/// How long the transfer may go without any progress (bytes queued or
/// received) before it counts as failed.
const STALL_TIMEOUT_MS: u64 = 15_000;
/// `client.loop`: the pause between one round's end and the next connection.
const ROUND_PAUSE_MS: u64 = 1000;
/// The send buffer (how much can be in flight).
const TX_BYTES: usize = 64 * 1024;
const RX_BYTES: usize = 4 * 1024;

fn start(boot: &'static Boot) -> ! {
    chroma_guest_netsvc::main_stack::run(boot, main)
}

/// What the bootargs ask for.
struct Plan {
    server: Ipv4Address,
    ping_count: u64,
    mebibytes: u64,
    seed: u64,
    stay_seconds: u64,
    /// `client.loop`: seconds of repeated transfers (0: one transfer).
    loop_seconds: u64,
    /// `client.reset`: SYSTEM_RESET at the end instead of powering off.
    reset: bool,
}

fn main(boot: &'static Boot) -> ! {
    let args = BootArgs::new(boot.platform.bootargs);
    let config = NetConfig::from_bootargs(
        &args,
        Ipv4Cidr::new(Ipv4Address::new(10, 0, 2, 16), 24),
        Some(Ipv4Address::new(10, 0, 2, 2)),
    )
    .unwrap_or_else(|error| fail(format_args!("{}", error)));
    let server = match args.value("client.server") {
        Some(text) => text
            .parse()
            .unwrap_or_else(|_| fail(format_args!("malformed bootarg client.server"))),
        None => Ipv4Address::new(10, 0, 2, 15),
    };
    let plan = Plan {
        server,
        ping_count: args.number("client.ping").unwrap_or(3),
        mebibytes: args.number("client.mib").unwrap_or(16),
        seed: args.number("client.seed").unwrap_or(1),
        stay_seconds: args.number("client.stay").unwrap_or(0),
        loop_seconds: args.number("client.loop").unwrap_or(0),
        reset: args.flag("client.reset"),
    };
    let mut stack =
        NetStack::start(boot, config).unwrap_or_else(|error| fail(format_args!("{}", error)));
    println!("netclient: ip {} mac {}", stack.config.address, stack.mac());
    println!(
        "netclient: info device at {:#x}, wakeup {:?}, tx {:?}; server {} ping {} mib {} seed {}",
        stack.slot.base,
        stack.wakeup,
        stack.config.tx_mode,
        plan.server,
        plan.ping_count,
        plan.mebibytes,
        plan.seed
    );
    println!("netclient: link up");

    ping(&mut stack, &plan);
    transfer(&mut stack, &plan);
    if plan.loop_seconds > 0 {
        let loop_until =
            timer::now().saturating_add(timer::ticks_in_ms(plan.loop_seconds.saturating_mul(1000)));
        let mut rounds: u64 = 1;
        while timer::now() < loop_until {
            // The server's sink listens again only once its last session has
            // closed: give it a moment (answering pings meanwhile).
            let pause_until = timer::now().saturating_add(timer::ticks_in_ms(ROUND_PAUSE_MS));
            while timer::now() < pause_until {
                stack.poll();
                stack.sleep(pause_until);
            }
            transfer(&mut stack, &plan);
            rounds += 1;
        }
        println!("netclient: rounds {}", rounds);
    }

    let counters = stack.counters();
    let (device_interrupts, timer_interrupts) = irq::interrupt_counts();
    println!(
        "netclient: info rx {} tx {} irq {} timer {} errors {}/{} tx wait {} ms",
        counters.rx_packets,
        counters.tx_packets,
        device_interrupts,
        timer_interrupts,
        counters.rx_errors,
        counters.tx_errors,
        counters.tx_wait_ticks * 1000 / timer::frequency()
    );
    println!("netclient: done");
    // Stay on the network a while (answering pings) if asked to.
    let stay_until =
        timer::now().saturating_add(timer::ticks_in_ms(plan.stay_seconds.saturating_mul(1000)));
    while timer::now() < stay_until {
        stack.poll();
        stack.sleep(stay_until);
    }
    if plan.reset {
        println!("netclient: reset");
        let status = chroma_guest_rt::psci::system_reset();
        fail(format_args!(
            "SYSTEM_RESET returned {}",
            chroma_guest_rt::psci::status_name(status)
        ));
    }
    chroma_guest_rt::power_off()
}

/// Prints a FAIL line and powers off.
fn fail(reason: core::fmt::Arguments<'_>) -> ! {
    println!("netclient: FAIL {}", reason);
    chroma_guest_rt::power_off()
}

/// Sends `plan.ping_count` echo requests one after the other, each waiting
/// up to [`PING_TIMEOUT_MS`] for its reply.
fn ping(stack: &mut NetStack, plan: &Plan) {
    if plan.ping_count == 0 {
        return;
    }
    let pinger =
        Pinger::new(stack, PING_IDENT).unwrap_or_else(|error| fail(format_args!("{}", error)));
    // Wait until the server is up (its first answer), then count.
    let warm = (1..=WARM_UP_PINGS).any(|attempt| {
        matches!(
            pinger.ping(stack, plan.server, 0x8000 | attempt, PING_TIMEOUT_MS),
            Ok(Some(_))
        )
    });
    if !warm {
        println!(
            "netclient: info server {} silent during warm-up",
            plan.server
        );
    }
    let mut replies = 0;
    for sequence in 1..=plan.ping_count {
        match pinger.ping(
            stack,
            plan.server,
            (sequence & 0xffff) as u16,
            PING_TIMEOUT_MS,
        ) {
            Ok(Some(micros)) => {
                println!("netclient: ping {} reply from {}", sequence, plan.server);
                println!("netclient: info ping {} rtt {} us", sequence, micros);
                replies += 1;
            }
            Ok(None) => println!("netclient: ping {} no reply", sequence),
            Err(error) => fail(format_args!("ping {}: {}", sequence, error)),
        }
    }
    pinger.remove(stack);
    println!("netclient: ping {}/{} replies", replies, plan.ping_count);
    if replies != plan.ping_count {
        fail(format_args!(
            "ping: {} of {} replies",
            replies, plan.ping_count
        ));
    }
}

/// Parses the sink's answer, `len=<n> fnv64=<hex>`.
fn parse_answer(line: &str) -> Option<(u64, u64)> {
    let mut length = None;
    let mut hash = None;
    for word in line.split_ascii_whitespace() {
        if let Some(value) = word.strip_prefix("len=") {
            length = value.parse().ok();
        } else if let Some(value) = word.strip_prefix("fnv64=") {
            hash = u64::from_str_radix(value, 16).ok();
        }
    }
    Some((length?, hash?))
}

/// Starts connecting socket `handle` to the sink on `server`, from a fresh
/// local port.
fn connect(stack: &mut NetStack, handle: SocketHandle, server: Ipv4Address) {
    let local_port = 49152 + (timer::now() % 16384) as u16;
    let socket = stack.sockets.get_mut::<tcp::Socket>(handle);
    if socket
        .connect(stack.interface.context(), (server, SINK_PORT), local_port)
        .is_err()
    {
        fail(format_args!("cannot connect to {}:{}", server, SINK_PORT));
    }
}

/// Connects to the sink, sends the stream, half-closes, reads the answer.
fn transfer(stack: &mut NetStack, plan: &Plan) {
    let total = plan.mebibytes.saturating_mul(1024 * 1024);
    let rx = tcp::SocketBuffer::new(vec![0; RX_BYTES]);
    let tx = tcp::SocketBuffer::new(vec![0; TX_BYTES]);
    let handle = stack.sockets.add(tcp::Socket::new(rx, tx));
    let connect_deadline = timer::now().saturating_add(timer::ticks_in_ms(CONNECT_TIMEOUT_MS));
    connect(stack, handle, plan.server);
    loop {
        stack.poll();
        let socket = stack.sockets.get_mut::<tcp::Socket>(handle);
        match socket.state() {
            tcp::State::Established => break,
            tcp::State::SynSent | tcp::State::SynReceived => {}
            // Refused: the sink may not listen again yet (its last session,
            // perhaps with this VM before a reset, is still closing). Retry
            // until the deadline.
            state if timer::now() < connect_deadline => {
                println!(
                    "netclient: info connection to {}:{} refused ({}), retrying",
                    plan.server, SINK_PORT, state
                );
                let retry_at = timer::now()
                    .saturating_add(timer::ticks_in_ms(CONNECT_RETRY_MS))
                    .min(connect_deadline);
                while timer::now() < retry_at {
                    stack.poll();
                    stack.sleep(retry_at);
                }
                connect(stack, handle, plan.server);
                continue;
            }
            state => fail(format_args!(
                "connection to {}:{} refused ({})",
                plan.server, SINK_PORT, state
            )),
        }
        if timer::now() >= connect_deadline {
            fail(format_args!(
                "connection to {}:{} timed out",
                plan.server, SINK_PORT
            ));
        }
        stack.sleep(connect_deadline);
    }
    println!("netclient: connected to {}:{}", plan.server, SINK_PORT);

    let stall_ticks = timer::ticks_in_ms(STALL_TIMEOUT_MS);
    let started = timer::now();
    let mut stream = XorShiftStream::new(plan.seed);
    let mut hash = Fnv64::new();
    let mut answer = [0u8; 96];
    let mut answer_length = 0;
    let mut closed = false;
    let mut last_progress = started;
    let finished = loop {
        stack.poll();
        let socket = stack.sockets.get_mut::<tcp::Socket>(handle);
        let mut progress = false;
        while hash.length() < total && socket.can_send() {
            let remaining = total - hash.length();
            let queued = socket.send(|buffer| {
                let count = buffer
                    .len()
                    .min(usize::try_from(remaining).unwrap_or(usize::MAX));
                stream.fill(&mut buffer[..count]);
                hash.update(&buffer[..count]);
                (count, count)
            });
            match queued {
                Ok(count) if count > 0 => progress = true,
                _ => break,
            }
        }
        if hash.length() == total && !closed {
            // Half-close: FIN after the data; the answer still comes in.
            socket.close();
            closed = true;
            progress = true;
        }
        while socket.can_recv() && answer_length < answer.len() {
            match socket.recv_slice(&mut answer[answer_length..]) {
                Ok(count) if count > 0 => {
                    answer_length += count;
                    progress = true;
                }
                _ => break,
            }
        }
        if answer[..answer_length].contains(&b'\n') || answer_length == answer.len() {
            break timer::now();
        }
        if !socket.is_open() || (!socket.may_recv() && closed) {
            fail(format_args!(
                "connection closed after {} bytes sent, no answer",
                hash.length()
            ));
        }
        let now = timer::now();
        if progress {
            last_progress = now;
            continue;
        }
        if now.saturating_sub(last_progress) >= stall_ticks {
            fail(format_args!(
                "transfer stalled after {} bytes sent (state {})",
                hash.length(),
                socket.state()
            ));
        }
        stack.sleep(last_progress.saturating_add(stall_ticks));
    };

    let text = core::str::from_utf8(&answer[..answer_length]).unwrap_or("");
    let text = text.split('\n').next().unwrap_or("");
    let Some((server_length, server_hash)) = parse_answer(text) else {
        fail(format_args!("malformed answer {:?}", text));
    };
    let matches = server_length == hash.length() && server_hash == hash.value();
    println!(
        "netclient: transfer {} bytes fnv64={:016x} server fnv64={:016x} {}",
        hash.length(),
        hash.value(),
        server_hash,
        if matches { "match" } else { "MISMATCH" }
    );
    let ticks = finished.saturating_sub(started).max(1);
    let frequency = u128::from(timer::frequency());
    let kib_per_second = u128::from(hash.length()) * frequency / (1024 * u128::from(ticks));
    let milliseconds = u128::from(ticks) * 1000 / frequency;
    println!(
        "netclient: info throughput {} KiB/s ({} bytes in {} ms)",
        kib_per_second,
        hash.length(),
        milliseconds
    );
    if !matches {
        fail(format_args!(
            "checksum mismatch: sent {} bytes, server counted {}",
            hash.length(),
            server_length
        ));
    }
    // Acknowledge the server's FIN (so its socket closes and listens again)
    // before powering off: wait for TIME-WAIT or CLOSED, briefly, and then
    // a moment more, so that the ACK (which smoltcp may delay) leaves before
    // the socket is dropped or the VM resets.
    let linger_deadline = timer::now().saturating_add(timer::ticks_in_ms(2000));
    let mut drained_at: Option<u64> = None;
    loop {
        stack.poll();
        let state = stack.sockets.get_mut::<tcp::Socket>(handle).state();
        let now = timer::now();
        if drained_at.is_none() && matches!(state, tcp::State::TimeWait | tcp::State::Closed) {
            drained_at = Some(now.saturating_add(timer::ticks_in_ms(ACK_DRAIN_MS)));
        }
        let until = drained_at.map_or(linger_deadline, |t| t.min(linger_deadline));
        if now >= until {
            break;
        }
        stack.sleep(until);
    }
    // Its buffers go back to the heap (a `client.loop` round after round).
    stack.sockets.remove(handle);
}
