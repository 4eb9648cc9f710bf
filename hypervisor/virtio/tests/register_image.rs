//! The register image (`MmioTransport::register_image`) that the hypervisor
//! maps read-only into the guest, so that reads do not trap: every word of
//! it is what a trapped read at that offset returns, in every state a
//! driver can bring the device to, and it follows the state (InterruptStatus
//! after an interrupt, QueueNumMax and QueueReady after QueueSel, the
//! feature word after DeviceFeaturesSel, Status after a reset).

use chroma_mem::vecmem::VecMemory;
use chroma_virtio::mmio::{reg, IMAGE_WORDS};
use chroma_virtio::mock::MockNetDriver;
use chroma_virtio::net::{new_net_device, VirtioNet, NET_FEATURES};

const BASE: u64 = 0x4000_0000;

fn image(dev: &VirtioNet) -> [u32; IMAGE_WORDS] {
    let mut words = [0u32; IMAGE_WORDS];
    dev.register_image(&mut words);
    words
}

/// Every word of the image equals the trapped read of the same offset
/// (refused reads read as zero, as the hypervisor answers them); the
/// device configuration byte by byte too.
fn assert_image_matches_reads(dev: &mut VirtioNet, what: &str) {
    let words = image(dev);
    for offset in (0..reg::CONFIG).step_by(4) {
        let read = dev.mmio_read(offset, 4).unwrap_or(0);
        assert_eq!(
            words[(offset / 4) as usize],
            read,
            "{what}: register {offset:#x}"
        );
    }
    for offset in reg::CONFIG..reg::WINDOW_SIZE {
        let read = dev.mmio_read(offset, 1).unwrap_or(0);
        let word = words[(offset / 4) as usize];
        let byte = (word >> (8 * (offset % 4))) & 0xff;
        assert_eq!(byte, read, "{what}: configuration byte {offset:#x}");
    }
}

#[test]
fn the_image_is_what_reads_return_in_every_state() {
    let mem = VecMemory::new(BASE, 1 << 20);
    let mut dev = new_net_device([2, 0, 0, 0, 0, 7], NET_FEATURES, 256);
    assert_image_matches_reads(&mut dev, "reset");
    for sel in 0..3 {
        dev.mmio_write(reg::DEVICE_FEATURES_SEL, 4, sel, &mem)
            .unwrap();
        assert_image_matches_reads(&mut dev, "features word");
    }
    let mut driver = MockNetDriver::init(&mut dev, &mem, BASE, 16, 2048, u64::MAX).unwrap();
    driver.fill_rx();
    for sel in 0..3 {
        dev.mmio_write(reg::QUEUE_SEL, 4, sel, &mem).unwrap();
        assert_image_matches_reads(&mut dev, "queue selected");
    }
    let before = image(&dev)[(reg::INTERRUPT_STATUS / 4) as usize];
    dev.raise_used_interrupt();
    let after = image(&dev)[(reg::INTERRUPT_STATUS / 4) as usize];
    assert_eq!(
        (before, after),
        (0, 1),
        "InterruptStatus follows the device"
    );
    assert_image_matches_reads(&mut dev, "interrupt pending");
    dev.mmio_write(reg::INTERRUPT_ACK, 4, 1, &mem).unwrap();
    assert_image_matches_reads(&mut dev, "acknowledged");
    dev.fail();
    assert_image_matches_reads(&mut dev, "needs reset");
    dev.mmio_write(reg::STATUS, 4, 0, &mem).unwrap();
    assert_image_matches_reads(&mut dev, "reset again");
}

/// Negative control of the comparison itself: an image taken before a
/// state change no longer matches the reads after it.
#[test]
fn a_stale_image_is_caught() {
    let mem = VecMemory::new(BASE, 1 << 20);
    let mut dev = new_net_device([2, 0, 0, 0, 0, 7], NET_FEATURES, 256);
    let _driver = MockNetDriver::init(&mut dev, &mem, BASE, 16, 2048, u64::MAX).unwrap();
    let stale = image(&dev);
    dev.raise_used_interrupt();
    let differs = (0..reg::CONFIG)
        .step_by(4)
        .any(|offset| stale[(offset / 4) as usize] != dev.mmio_read(offset, 4).unwrap_or(0));
    assert!(differs, "the comparison cannot tell a stale image");
}
