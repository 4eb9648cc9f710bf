//! Test guest: TCP echo (port 7) and sink (port 9), ICMP echo, over virtio-net.
//!
//! Bootargs: `net.ip=A.B.C.D/N` (default 10.0.2.15/24), `net.gw=A.B.C.D`
//! (default 10.0.2.2), `net.tx=wait|queued`, `net.suppress=on|off` (see
//! `stack::NetConfig`), `svc.sinks=N` (power off after N
//! sink sessions); `svc.ping=A.B.C.D` pings that
//! host `svc.pings=N` (default 3) times once it answers, before serving. The sink reads until the peer shuts its write side,
//! then answers `len=<n> fnv64=<hex>\n` and closes. With `svc.heartbeat`
//! (or `svc.heartbeat=MS`) a heartbeat line gives the packet and interrupt
//! counts every 2 s (or MS); without it the service prints nothing while it
//! idles. Runs until powered off.
#![no_std]
#![no_main]
#![deny(clippy::undocumented_unsafe_blocks)]

extern crate alloc;

use core::fmt::Write as _;

use chroma_guest_netsvc::checksum::Fnv64;
use chroma_guest_netsvc::irq;
use chroma_guest_netsvc::ping::Pinger;
use chroma_guest_netsvc::stack::{NetConfig, NetStack};
use chroma_guest_rt::args::BootArgs;
use chroma_guest_rt::{println, timer, Boot};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::wire::{Ipv4Address, Ipv4Cidr};

chroma_guest_rt::entry!(start);

fn start(boot: &'static Boot) -> ! {
    chroma_guest_netsvc::main_stack::run(boot, main)
}

/// TCP echo (RFC 862).
const ECHO_PORT: u16 = 7;
/// TCP discard (RFC 863), here answering with a checksum line at the end.
const SINK_PORT: u16 = 9;
/// Heartbeat period (`svc.heartbeat`), and how often the loop wakes up when
/// idle without one.
const HEARTBEAT_MS: u64 = 2000;
/// Socket buffer sizes: the sink's receive buffer is the TCP window.
const SINK_RX_BYTES: usize = 64 * 1024;
const SINK_TX_BYTES: usize = 1024;
const ECHO_BYTES: usize = 16 * 1024;

fn main(boot: &'static Boot) -> ! {
    let args = BootArgs::new(boot.platform.bootargs);
    let defaults = (
        Ipv4Cidr::new(Ipv4Address::new(10, 0, 2, 15), 24),
        Some(Ipv4Address::new(10, 0, 2, 2)),
    );
    let config = match NetConfig::from_bootargs(&args, defaults.0, defaults.1) {
        Ok(config) => config,
        Err(error) => fail(format_args!("{}", error)),
    };
    let mut stack = match NetStack::start(boot, config) {
        Ok(stack) => stack,
        Err(error) => fail(format_args!("{}", error)),
    };
    println!("netsvc: ip {} mac {}", stack.config.address, stack.mac());
    println!(
        "netsvc: info device at {:#x}, wakeup {:?}, tx {:?}",
        stack.slot.base, stack.wakeup, stack.config.tx_mode
    );
    println!("netsvc: link up");

    let mut echo = Echo::new(&mut stack);
    let mut sink = Sink::new(&mut stack);
    if let Some(target) = args.value("svc.ping") {
        let target = target
            .parse()
            .unwrap_or_else(|_| fail(format_args!("malformed bootarg svc.ping")));
        ping(&mut stack, target, args.number("svc.pings").unwrap_or(3));
    }
    // Background chatter only when asked for: the console may be someone's shell.
    let heartbeat = args
        .number("svc.heartbeat")
        .or_else(|| args.flag("svc.heartbeat").then_some(HEARTBEAT_MS))
        .filter(|&period| period > 0);
    let heartbeat_ticks = timer::ticks_in_ms(heartbeat.unwrap_or(HEARTBEAT_MS));
    let mut next_heartbeat = timer::now().saturating_add(heartbeat_ticks);
    let mut heartbeat_count: u64 = 0;
    // `svc.sinks=N`: power off about a second after the N-th sink session
    // was answered (lets a test run end cleanly).
    let sinks = args.number("svc.sinks");
    let mut off_at: Option<u64> = None;
    loop {
        if off_at.is_none() && sinks.is_some_and(|n| sink.sessions >= n) {
            off_at = Some(timer::now().saturating_add(timer::ticks_in_ms(1000)));
        }
        if off_at.is_some_and(|t| timer::now() >= t) {
            println!("netsvc: done");
            chroma_guest_rt::power_off();
        }
        stack.poll();
        let busy = echo.serve(&mut stack) | sink.serve(&mut stack);
        if busy {
            // Send what the services queued before looking again.
            continue;
        }
        if timer::now() >= next_heartbeat {
            next_heartbeat = timer::now().saturating_add(heartbeat_ticks);
            if heartbeat.is_some() {
                heartbeat_count += 1;
                let counters = stack.counters();
                let (device_interrupts, timer_interrupts) = irq::interrupt_counts();
                println!(
                    "netsvc: heartbeat {} rx {} tx {} irq {} timer {} errors {}/{}",
                    heartbeat_count,
                    counters.rx_packets,
                    counters.tx_packets,
                    device_interrupts,
                    timer_interrupts,
                    counters.rx_errors,
                    counters.tx_errors
                );
            }
        }
        stack.sleep(off_at.map_or(next_heartbeat, |t| t.min(next_heartbeat)));
    }
}

/// Echo identifier of the service's own pings ("NS").
const PING_IDENT: u16 = 0x4e53;
/// How long each echo request waits for its reply.
const PING_TIMEOUT_MS: u64 = 1000;
/// How long the service waits for the peer to answer at all.
const PING_PEER_WAIT_S: u64 = 30;

/// Pings `target` `count` times once it answers at all (it may still be
/// booting: up to [`PING_PEER_WAIT_S`] of unanswered probes first). Failures
/// print a FAIL line; the service goes on either way.
fn ping(stack: &mut NetStack, target: Ipv4Address, count: u64) {
    let pinger = match Pinger::new(stack, PING_IDENT) {
        Ok(pinger) => pinger,
        Err(error) => fail(format_args!("{}", error)),
    };
    let mut reachable = false;
    for _ in 0..PING_PEER_WAIT_S {
        if let Ok(Some(_)) = pinger.ping(stack, target, 0, PING_TIMEOUT_MS) {
            reachable = true;
            break;
        }
    }
    if !reachable {
        println!(
            "netsvc: FAIL ping {}: no reply in {} s",
            target, PING_PEER_WAIT_S
        );
        pinger.remove(stack);
        return;
    }
    let mut replies = 0;
    for sequence in 1..=count {
        match pinger.ping(stack, target, (sequence & 0xffff) as u16, PING_TIMEOUT_MS) {
            Ok(Some(micros)) => {
                println!("netsvc: ping {} reply from {}", sequence, target);
                println!("netsvc: info ping {} rtt {} us", sequence, micros);
                replies += 1;
            }
            Ok(None) => println!("netsvc: ping {} no reply", sequence),
            Err(error) => println!("netsvc: ping {}: {}", sequence, error),
        }
    }
    pinger.remove(stack);
    println!("netsvc: ping {}/{} replies", replies, count);
    if replies != count {
        println!("netsvc: FAIL ping: {} of {} replies", replies, count);
    }
}

/// Prints a FAIL line and powers off.
fn fail(reason: core::fmt::Arguments<'_>) -> ! {
    println!("netsvc: FAIL {}", reason);
    chroma_guest_rt::power_off()
}

fn tcp_socket(rx_bytes: usize, tx_bytes: usize) -> tcp::Socket<'static> {
    let rx = tcp::SocketBuffer::new(alloc::vec![0; rx_bytes]);
    let tx = tcp::SocketBuffer::new(alloc::vec![0; tx_bytes]);
    tcp::Socket::new(rx, tx)
}

/// Re-arms a listener once its socket has closed; true if it did.
fn relisten(socket: &mut tcp::Socket<'static>, port: u16) -> bool {
    if socket.is_open() {
        return false;
    }
    if socket.listen(port).is_err() {
        fail(format_args!("cannot listen on port {}", port));
    }
    true
}

/// The echo service: one connection at a time.
struct Echo {
    handle: SocketHandle,
}

impl Echo {
    fn new(stack: &mut NetStack) -> Self {
        let handle = stack.sockets.add(tcp_socket(ECHO_BYTES, ECHO_BYTES));
        relisten(stack.sockets.get_mut::<tcp::Socket>(handle), ECHO_PORT);
        Self { handle }
    }

    /// Moves received bytes to the send buffer; true if it did anything.
    fn serve(&mut self, stack: &mut NetStack) -> bool {
        let socket = stack.sockets.get_mut::<tcp::Socket>(self.handle);
        if relisten(socket, ECHO_PORT) {
            return false;
        }
        let mut busy = false;
        let mut chunk = [0u8; 2048];
        while socket.can_recv() && socket.can_send() {
            let room = socket.send_capacity() - socket.send_queue();
            let limit = room.min(chunk.len());
            let count = match socket.recv_slice(&mut chunk[..limit]) {
                Ok(count) if count > 0 => count,
                _ => break,
            };
            // Cannot fail short: `limit` fits in the send buffer.
            let _ = socket.send_slice(&chunk[..count]);
            busy = true;
        }
        if socket.state() == tcp::State::CloseWait && !socket.can_recv() && socket.send_queue() == 0
        {
            socket.close();
            busy = true;
        }
        busy
    }
}

/// The sink: hashes everything until the peer's FIN, then reports.
struct Sink {
    handle: SocketHandle,
    hash: Fnv64,
    replied: bool,
    connected: bool,
    /// Sessions answered so far.
    sessions: u64,
}

impl Sink {
    fn new(stack: &mut NetStack) -> Self {
        let handle = stack.sockets.add(tcp_socket(SINK_RX_BYTES, SINK_TX_BYTES));
        relisten(stack.sockets.get_mut::<tcp::Socket>(handle), SINK_PORT);
        Self {
            handle,
            hash: Fnv64::new(),
            replied: false,
            sessions: 0,
            connected: false,
        }
    }

    fn serve(&mut self, stack: &mut NetStack) -> bool {
        let socket = stack.sockets.get_mut::<tcp::Socket>(self.handle);
        if !socket.is_open() {
            if self.connected && !self.replied {
                println!(
                    "netsvc: sink connection lost after {} bytes",
                    self.hash.length()
                );
            }
            self.hash = Fnv64::new();
            self.replied = false;
            self.connected = false;
            relisten(socket, SINK_PORT);
            return false;
        }
        if socket.is_active() && socket.state() != tcp::State::Listen {
            self.connected = true;
        }
        let mut busy = false;
        while socket.can_recv() {
            let hash = &mut self.hash;
            match socket.recv(|data| {
                hash.update(data);
                (data.len(), data.len())
            }) {
                Ok(count) if count > 0 => busy = true,
                _ => break,
            }
        }
        if !self.replied && socket.state() == tcp::State::CloseWait && !socket.can_recv() {
            let mut line = LineBuffer::new();
            let _ = writeln!(
                line,
                "len={} fnv64={:016x}",
                self.hash.length(),
                self.hash.value()
            );
            let _ = socket.send_slice(line.as_bytes());
            socket.close();
            println!(
                "netsvc: sink received {} bytes fnv64={:016x}",
                self.hash.length(),
                self.hash.value()
            );
            self.replied = true;
            self.sessions += 1;
            busy = true;
        }
        busy
    }
}

/// A short text line built on the stack.
struct LineBuffer {
    bytes: [u8; 96],
    length: usize,
}

impl LineBuffer {
    fn new() -> Self {
        Self {
            bytes: [0; 96],
            length: 0,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.length]
    }
}

impl core::fmt::Write for LineBuffer {
    fn write_str(&mut self, text: &str) -> core::fmt::Result {
        let end = self
            .length
            .checked_add(text.len())
            .ok_or(core::fmt::Error)?;
        let target = self
            .bytes
            .get_mut(self.length..end)
            .ok_or(core::fmt::Error)?;
        target.copy_from_slice(text.as_bytes());
        self.length = end;
        Ok(())
    }
}
