//! SMSC LAN9118 (LAN9220 family) Ethernet controller, as QEMU models it on the MPS2
//! boards (`hw/net/lan9118.c`), behind `embassy-net-driver`.
//!
//! 32-bit bus mode, programmed I/O through the FIFO ports: a frame goes out as TX command
//! A, TX command B and the data words on `TX_DATA`; a frame comes in as one word on
//! `RX_STATUS` (its length, CRC included) and the data words on `RX_DATA`.
//!
//! Receive is interrupt driven: the chip raises `RSFL` (RX status FIFO level) on its IRQ
//! line (NVIC 13 on AN385/AN386), [`on_interrupt`] acknowledges it and wakes the network
//! stack, which then drains the FIFO through [`Driver::receive`]. Transmit never waits in
//! QEMU (a frame is sent as its last word is written); on a real chip a full TX FIFO makes
//! [`Driver::transmit`] return `None` and the stack is woken again at the next SysTick.

use core::task::Context;

use embassy_net_driver::{Capabilities, Driver, HardwareAddress, LinkState, RxToken, TxToken};
use embassy_sync::waitqueue::AtomicWaker;

/// Where the chip sits on the AN385/AN386 memory map.
pub const BASE: usize = 0x4020_0000;
/// Its interrupt line on the NVIC.
pub const IRQ: u16 = 13;

// System control and status registers (byte offsets).
const RX_DATA: usize = 0x00;
const TX_DATA: usize = 0x20;
const RX_STATUS: usize = 0x40;
const TX_STATUS: usize = 0x48;
const ID_REV: usize = 0x50;
const IRQ_CFG: usize = 0x54;
const INT_STS: usize = 0x58;
const INT_EN: usize = 0x5c;
const BYTE_TEST: usize = 0x64;
const FIFO_INT: usize = 0x68;
const RX_CFG: usize = 0x6c;
const TX_CFG: usize = 0x70;
const HW_CFG: usize = 0x74;
const RX_FIFO_INF: usize = 0x7c;
const TX_FIFO_INF: usize = 0x80;
const PMT_CTRL: usize = 0x84;
const MAC_CSR_CMD: usize = 0xa4;
const MAC_CSR_DATA: usize = 0xa8;

// MAC control and status registers (indirect, through MAC_CSR_CMD/DATA).
const MAC_CR: u32 = 1;
const MAC_ADDRH: u32 = 2;
const MAC_ADDRL: u32 = 3;
const MAC_MII_ACC: u32 = 6;
const MAC_MII_DATA: u32 = 7;

const MAC_CR_RXEN: u32 = 1 << 2;
const MAC_CR_TXEN: u32 = 1 << 3;
const MAC_CR_FDPX: u32 = 1 << 20;

const CSR_BUSY: u32 = 1 << 31;
const CSR_READ: u32 = 1 << 30;

const HW_CFG_SRST: u32 = 1 << 0;
const PMT_READY: u32 = 1 << 0;
const TX_CFG_TX_ON: u32 = 1 << 1;
const TX_CFG_TXSAO: u32 = 1 << 2;
/// IRQ pin enabled, active high, push-pull.
const IRQ_CFG_EN_HIGH_PP: u32 = (1 << 8) | (1 << 4) | 1;
/// RX status FIFO level interrupt.
const INT_RSFL: u32 = 1 << 3;

const TXA_FIRST: u32 = 1 << 13;
const TXA_LAST: u32 = 1 << 12;

/// PHY (address 1) basic status: link up.
const BMSR_LINK: u16 = 1 << 2;

/// The largest Ethernet frame we move (no VLAN tag, no FCS): 1024 bytes, not Ethernet's
/// 1514, to keep 1 KiB of RAM in the two frame buffers. The device's datagrams stay well
/// under it (CoAP payloads of at most 512 bytes, block-wise beyond, plus options and
/// OSCORE: ~650 bytes on the wire) and so do QEMU's DHCP replies (~590 bytes); a larger
/// frame is dropped and counted, and embassy-net sends none (the MTU it is told).
pub const MTU: usize = 1024;

/// The MAC address used when the EEPROM gives none (locally administered).
pub const FALLBACK_MAC: [u8; 6] = [0x02, 0x50, 0x45, 0x48, 0x52, 0x41];

static RX_WAKER: AtomicWaker = AtomicWaker::new();

/// Why the chip could not be brought up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitError {
    /// `BYTE_TEST` did not read 0x8765_4321: no LAN9118 here, or a bus-width problem.
    NoChip(u32),
    /// The chip did not leave reset.
    ResetTimeout,
}

/// Register access to the chip at [`BASE`].
#[derive(Clone, Copy)]
struct Regs;

impl Regs {
    #[inline]
    fn read(self, off: usize) -> u32 {
        // SAFETY: a 32-bit aligned register of the LAN9118 MMIO window.
        unsafe { core::ptr::read_volatile((BASE + off) as *const u32) }
    }
    #[inline]
    fn write(self, off: usize, v: u32) {
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile((BASE + off) as *mut u32, v) }
    }
    fn mac_wait(self) {
        for _ in 0..100_000 {
            if self.read(MAC_CSR_CMD) & CSR_BUSY == 0 {
                return;
            }
        }
    }
    fn mac_read(self, reg: u32) -> u32 {
        self.mac_wait();
        self.write(MAC_CSR_CMD, CSR_BUSY | CSR_READ | reg);
        self.mac_wait();
        self.read(MAC_CSR_DATA)
    }
    fn mac_write(self, reg: u32, v: u32) {
        self.mac_wait();
        self.write(MAC_CSR_DATA, v);
        self.write(MAC_CSR_CMD, CSR_BUSY | reg);
        self.mac_wait();
    }
    fn mii_wait(self) {
        for _ in 0..100_000 {
            if self.mac_read(MAC_MII_ACC) & 1 == 0 {
                return;
            }
        }
    }
    fn phy_read(self, reg: u32) -> u16 {
        self.mii_wait();
        // PHY address 1, register `reg`, read, busy.
        self.mac_write(MAC_MII_ACC, (1 << 11) | (reg << 6) | 1);
        self.mii_wait();
        self.mac_read(MAC_MII_DATA) as u16
    }
    fn phy_write(self, reg: u32, v: u16) {
        self.mii_wait();
        self.mac_write(MAC_MII_DATA, u32::from(v));
        self.mac_write(MAC_MII_ACC, (1 << 11) | (reg << 6) | 2 | 1);
        self.mii_wait();
    }
}

/// The chip, after [`Lan9118::new`] reset and configured it.
pub struct Lan9118 {
    regs: Regs,
    mac: [u8; 6],
    rx_buf: &'static mut [u8; MTU + 4],
    tx_buf: &'static mut [u8; MTU],
    /// Frames received and sent, and frames dropped on a bad status.
    pub stats: Stats,
}

/// Counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// Frames handed to the stack.
    pub rx: u32,
    /// Frames written to the TX FIFO.
    pub tx: u32,
    /// Frames dropped (error status, too long).
    pub rx_dropped: u32,
}

impl Lan9118 {
    /// Resets the chip, reads its MAC address (loaded from its EEPROM at reset; a fixed
    /// one if that is blank), enables the MAC's receiver and transmitter, auto-negotiation
    /// on the PHY, and the RX interrupt. The caller unmasks [`IRQ`] on the NVIC.
    ///
    /// Must be called at most once: the driver owns the chip. The frame buffers are
    /// passed in (from a `StaticCell`) so the driver itself stays small to move.
    pub fn new(
        rx_buf: &'static mut [u8; MTU + 4],
        tx_buf: &'static mut [u8; MTU],
    ) -> Result<Self, InitError> {
        let r = Regs;
        let test = r.read(BYTE_TEST);
        if test != 0x8765_4321 {
            return Err(InitError::NoChip(test));
        }
        r.write(HW_CFG, HW_CFG_SRST);
        let mut ready = false;
        for _ in 0..1_000_000 {
            if r.read(HW_CFG) & HW_CFG_SRST == 0 && r.read(PMT_CTRL) & PMT_READY != 0 {
                ready = true;
                break;
            }
        }
        if !ready {
            return Err(InitError::ResetTimeout);
        }
        r.write(INT_EN, 0);
        r.write(INT_STS, 0xffff_ffff);

        let lo = r.mac_read(MAC_ADDRL).to_le_bytes();
        let hi = r.mac_read(MAC_ADDRH).to_le_bytes();
        let mut mac = [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1]];
        if mac == [0; 6] || mac == [0xff; 6] {
            mac = FALLBACK_MAC;
            r.mac_write(
                MAC_ADDRL,
                u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]),
            );
            r.mac_write(MAC_ADDRH, u32::from(mac[4]) | (u32::from(mac[5]) << 8));
        }

        // PHY: auto-negotiation on and restarted (QEMU completes it at once).
        r.phy_write(0, (1 << 12) | (1 << 9));

        // MAC: full duplex, RX and TX on; exact address filter (PRMS off), broadcast in.
        r.mac_write(MAC_CR, MAC_CR_FDPX | MAC_CR_TXEN | MAC_CR_RXEN);
        r.write(TX_CFG, TX_CFG_TX_ON | TX_CFG_TXSAO);
        r.write(RX_CFG, 0); // no offset, no end padding

        // Interrupt on any frame in the RX status FIFO (level 0).
        r.write(FIFO_INT, (r.read(FIFO_INT) & !0xff) | 0);
        r.write(IRQ_CFG, IRQ_CFG_EN_HIGH_PP);
        r.write(INT_STS, INT_RSFL);
        r.write(INT_EN, INT_RSFL);

        Ok(Lan9118 {
            regs: r,
            mac,
            rx_buf,
            tx_buf,
            stats: Stats::default(),
        })
    }

    /// The MAC address in use.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The chip's ID and revision (`0x0118_0001` under QEMU).
    pub fn id_rev(&self) -> u32 {
        self.regs.read(ID_REV)
    }

    /// Frames waiting in the RX status FIFO.
    fn rx_pending(&self) -> u32 {
        (self.regs.read(RX_FIFO_INF) >> 16) & 0xff
    }

    /// Pops one frame into `rx_buf`; its length without FCS, or `None` if it was dropped.
    fn pop_frame(&mut self) -> Option<usize> {
        let status = self.regs.read(RX_STATUS);
        let len_with_fcs = ((status >> 16) & 0x3fff) as usize;
        let words = len_with_fcs.div_ceil(4);
        let error = status & (1 << 15) != 0;
        if error || len_with_fcs < 18 || len_with_fcs > self.rx_buf.len() {
            // Discard by reading the words out (QEMU's fast-forward leaves the FIFO
            // count wrong, so do not use RX_DP_CTRL).
            for _ in 0..words {
                let _ = self.regs.read(RX_DATA);
            }
            self.stats.rx_dropped += 1;
            return None;
        }
        for i in 0..words {
            let w = self.regs.read(RX_DATA).to_le_bytes();
            let at = i * 4;
            let n = (self.rx_buf.len() - at).min(4);
            self.rx_buf[at..at + n].copy_from_slice(&w[..n]);
        }
        self.stats.rx += 1;
        Some(len_with_fcs - 4)
    }

    fn reap_tx_status(&self) {
        let used = (self.regs.read(TX_FIFO_INF) >> 16) & 0xff;
        for _ in 0..used {
            let _ = self.regs.read(TX_STATUS);
        }
    }
}

/// Acknowledges the chip's interrupt and wakes the receiver. Call from the IRQ handler.
pub fn on_interrupt() {
    let r = Regs;
    let sts = r.read(INT_STS);
    r.write(INT_STS, sts);
    RX_WAKER.wake();
}

#[allow(dead_code)]
/// Wakes the receiver from elsewhere (the SysTick, as a guard against a lost edge).
pub fn kick() {
    RX_WAKER.wake();
}

/// A received frame, already copied out of the FIFO.
pub struct Rx<'a> {
    frame: &'a mut [u8],
}

impl RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, f: F) -> R {
        f(self.frame)
    }
}

/// Room for one frame to send.
pub struct Tx<'a> {
    regs: Regs,
    buf: &'a mut [u8; MTU],
    count: &'a mut u32,
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let len = len.min(MTU);
        let result = f(&mut self.buf[..len]);
        let r = self.regs;
        r.write(TX_DATA, TXA_FIRST | TXA_LAST | len as u32);
        r.write(TX_DATA, ((*self.count & 0xffff) << 16) | len as u32);
        for chunk in self.buf[..len].chunks(4) {
            let mut w = [0u8; 4];
            w[..chunk.len()].copy_from_slice(chunk);
            r.write(TX_DATA, u32::from_le_bytes(w));
        }
        *self.count = self.count.wrapping_add(1);
        result
    }
}

impl Driver for Lan9118 {
    type RxToken<'a> = Rx<'a>;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, cx: &mut Context) -> Option<(Rx<'_>, Tx<'_>)> {
        // Register first, then look: a frame arriving in between still wakes us.
        RX_WAKER.register(cx.waker());
        loop {
            if self.rx_pending() == 0 {
                return None;
            }
            if let Some(len) = self.pop_frame() {
                self.reap_tx_status();
                let Lan9118 {
                    regs,
                    rx_buf,
                    tx_buf,
                    stats,
                    ..
                } = self;
                return Some((
                    Rx {
                        frame: &mut rx_buf[..len],
                    },
                    Tx {
                        regs: *regs,
                        buf: &mut **tx_buf,
                        count: &mut stats.tx,
                    },
                ));
            }
        }
    }

    fn transmit(&mut self, cx: &mut Context) -> Option<Tx<'_>> {
        self.reap_tx_status();
        // Data words plus the two command words must fit in the TX data FIFO.
        let free = (self.regs.read(TX_FIFO_INF) & 0xffff) as usize;
        if free < MTU + 8 {
            RX_WAKER.register(cx.waker());
            return None;
        }
        Some(Tx {
            regs: self.regs,
            buf: &mut *self.tx_buf,
            count: &mut self.stats.tx,
        })
    }

    fn link_state(&mut self, cx: &mut Context) -> LinkState {
        if self.regs.phy_read(1) & BMSR_LINK != 0 {
            LinkState::Up
        } else {
            // Looked at again when the SysTick kicks the stack.
            RX_WAKER.register(cx.waker());
            LinkState::Down
        }
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.max_transmission_unit = MTU;
        caps.max_burst_size = Some(1);
        caps
    }

    fn hardware_address(&self) -> HardwareAddress {
        HardwareAddress::Ethernet(self.mac)
    }
}
