//! ICMP echo requests from an smoltcp ICMP socket (the replies to other
//! hosts' requests come from the interface itself).

use alloc::vec;

use chroma_guest_rt::timer;
use smoltcp::iface::SocketHandle;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::socket::icmp;
use smoltcp::wire::{Icmpv4Packet, Icmpv4Repr, IpAddress, Ipv4Address};

use crate::stack::{NetError, NetStack};

/// Bytes of payload in each echo request.
const PAYLOAD_LENGTH: usize = 56;

/// An ICMP socket bound to one echo identifier.
pub struct Pinger {
    handle: SocketHandle,
    ident: u16,
}

impl Pinger {
    /// Adds an ICMP socket for echo identifier `ident` to the stack.
    pub fn new(stack: &mut NetStack, ident: u16) -> Result<Self, NetError> {
        let buffer =
            || icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 1024]);
        let mut socket = icmp::Socket::new(buffer(), buffer());
        socket
            .bind(icmp::Endpoint::Ident(ident))
            .map_err(|_| NetError::Socket("cannot bind the ICMP socket"))?;
        Ok(Self {
            handle: stack.sockets.add(socket),
            ident,
        })
    }

    /// Sends one echo request with `sequence` to `target` and waits up to
    /// `timeout_ms` for the reply; returns the round trip in microseconds.
    /// Keeps polling the stack (so other sockets are served) while it waits.
    pub fn ping(
        &self,
        stack: &mut NetStack,
        target: Ipv4Address,
        sequence: u16,
        timeout_ms: u64,
    ) -> Result<Option<u64>, NetError> {
        let checksums = ChecksumCapabilities::default();
        let payload = [0x5au8; PAYLOAD_LENGTH];
        let request = Icmpv4Repr::EchoRequest {
            ident: self.ident,
            seq_no: sequence,
            data: &payload,
        };
        let sent_at = timer::now();
        {
            let socket = stack.sockets.get_mut::<icmp::Socket>(self.handle);
            let bytes = socket
                .send(request.buffer_len(), IpAddress::Ipv4(target))
                .map_err(|_| NetError::Socket("echo request could not be queued"))?;
            request.emit(&mut Icmpv4Packet::new_unchecked(bytes), &checksums);
        }
        let deadline = sent_at.saturating_add(timer::ticks_in_ms(timeout_ms));
        while timer::now() < deadline {
            stack.poll();
            let socket = stack.sockets.get_mut::<icmp::Socket>(self.handle);
            while let Ok((data, from)) = socket.recv() {
                let Ok(packet) = Icmpv4Packet::new_checked(data) else {
                    continue;
                };
                let Ok(Icmpv4Repr::EchoReply { ident, seq_no, .. }) =
                    Icmpv4Repr::parse(&packet, &checksums)
                else {
                    continue;
                };
                if ident == self.ident && seq_no == sequence && from == IpAddress::Ipv4(target) {
                    let ticks = timer::now().saturating_sub(sent_at);
                    return Ok(Some(ticks * 1_000_000 / timer::frequency()));
                }
            }
            stack.sleep(deadline);
        }
        Ok(None)
    }

    /// Takes the socket out of the stack.
    pub fn remove(self, stack: &mut NetStack) {
        stack.sockets.remove(self.handle);
    }
}
