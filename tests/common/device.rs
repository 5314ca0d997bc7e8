//! A virtual LoRaWAN 1.0.x end device: builds join-requests and data uplinks, and reads
//! the server's downlinks with its own session keys.

use loraflow_network_server::lorawan::{self, DataUplink, Phy};
use loraflow_network_server::types::{AesKey, DevAddr, Eui64};

pub struct Device {
    pub dev_eui: Eui64,
    pub join_eui: Eui64,
    pub app_key: AesKey,
    pub dev_addr: DevAddr,
    pub nwk_s_key: AesKey,
    pub app_s_key: AesKey,
    pub f_cnt_up: u32,
    pub dev_nonce: u16,
    pub rx1_delay: u8,
    pub rx2_dr: u8,
    pub rx1_dr_offset: u8,
    pub cf_list: Option<[u8; 16]>,
}

/// Message type and FCtrl flags of an uplink.
#[derive(Debug, Clone, Copy, Default)]
pub struct UplinkFlags {
    pub confirmed: bool,
    pub ack: bool,
    pub adr: bool,
    pub adr_ack_req: bool,
}

/// A downlink as the device sees it after MIC check and decryption.
#[derive(Debug)]
pub struct ReceivedDownlink {
    pub confirmed: bool,
    pub ack: bool,
    pub adr: bool,
    pub f_pending: bool,
    pub f_cnt: u32,
    pub f_port: Option<u8>,
    pub payload: Vec<u8>,
    pub f_opts: Vec<u8>,
}

impl ReceivedDownlink {
    /// The MAC commands it carries, from FOpts or an FPort 0 payload.
    pub fn mac_commands(&self) -> Vec<loraflow_network_server::mac::DownlinkMacCommand> {
        let raw = if self.f_port == Some(0) { &self.payload } else { &self.f_opts };
        let (cmds, err) = loraflow_network_server::mac::parse_downlink_commands(raw);
        assert_eq!(err, None, "downlink MAC commands parse");
        cmds
    }
}

impl Device {
    pub fn otaa(dev_eui: &str, app_key: &str) -> Device {
        Device {
            dev_eui: dev_eui.parse().unwrap(),
            join_eui: "0000000000000000".parse().unwrap(),
            app_key: app_key.parse().unwrap(),
            dev_addr: DevAddr::default(),
            nwk_s_key: AesKey::default(),
            app_s_key: AesKey::default(),
            f_cnt_up: 0,
            dev_nonce: 0,
            rx1_delay: 0,
            rx2_dr: 0,
            rx1_dr_offset: 0,
            cf_list: None,
        }
    }

    pub fn abp(dev_eui: &str, dev_addr: &str, nwk_s_key: &str, app_s_key: &str) -> Device {
        let mut d = Device::otaa(dev_eui, "00000000000000000000000000000000");
        d.dev_addr = dev_addr.parse().unwrap();
        d.nwk_s_key = nwk_s_key.parse().unwrap();
        d.app_s_key = app_s_key.parse().unwrap();
        d
    }

    pub fn join_request(&mut self) -> Vec<u8> {
        self.dev_nonce += 1;
        lorawan::build_join_request(&self.app_key, self.join_eui, self.dev_eui, self.dev_nonce)
    }

    /// Decrypts a join-accept and takes its session; panics on a bad MIC.
    pub fn accept(&mut self, phy: &[u8], net_id: [u8; 3]) {
        let ja = lorawan::decrypt_join_accept(phy, &self.app_key).expect("join-accept decrypts");
        assert!(ja.mic_valid, "join-accept MIC valid");
        assert_eq!(ja.fields.net_id, net_id);
        let keys = lorawan::derive_session_keys_1_0(&self.app_key, ja.fields.join_nonce, ja.fields.net_id, self.dev_nonce);
        self.dev_addr = ja.fields.dev_addr;
        self.nwk_s_key = keys.nwk_s_key;
        self.app_s_key = keys.app_s_key;
        self.rx1_delay = ja.fields.rx_delay;
        self.rx2_dr = ja.fields.rx2_dr;
        self.rx1_dr_offset = ja.fields.rx1_dr_offset;
        self.cf_list = ja.fields.cf_list;
        self.f_cnt_up = 0;
    }

    pub fn uplink(&mut self, confirmed: bool, f_port: u8, payload: &[u8]) -> Vec<u8> {
        self.uplink_with(confirmed, false, Some(f_port), payload, &[])
    }

    pub fn uplink_with(&mut self, confirmed: bool, ack: bool, f_port: Option<u8>, payload: &[u8], f_opts: &[u8]) -> Vec<u8> {
        self.uplink_flags(UplinkFlags { confirmed, ack, ..UplinkFlags::default() }, f_port, payload, f_opts)
    }

    /// An uplink with the given FCtrl flags and message type.
    pub fn uplink_flags(&mut self, flags: UplinkFlags, f_port: Option<u8>, payload: &[u8], f_opts: &[u8]) -> Vec<u8> {
        let UplinkFlags { confirmed, ack, adr, adr_ack_req } = flags;
        let phy = lorawan::build_data_uplink(
            &DataUplink {
                confirmed,
                dev_addr: self.dev_addr,
                f_cnt_up: self.f_cnt_up,
                adr,
                adr_ack_req,
                ack,
                class_b: false,
                f_opts: f_opts.to_vec(),
                f_port,
                frm_payload: payload.to_vec(),
            },
            &self.nwk_s_key,
            &self.app_s_key,
        )
        .unwrap();
        self.f_cnt_up += 1;
        phy
    }

    /// Checks the MIC and decrypts a data downlink (full counter given by the test).
    pub fn read_downlink(&self, phy: &[u8], f_cnt: u32) -> ReceivedDownlink {
        let Phy::Data(d) = lorawan::parse(phy).expect("downlink parses") else { panic!("not a data downlink") };
        assert!(!d.is_uplink());
        assert_eq!(d.dev_addr, self.dev_addr);
        assert_eq!(u32::from(d.f_cnt16), f_cnt & 0xffff);
        let mic = lorawan::data_mic(&phy[..phy.len() - 4], &self.nwk_s_key, self.dev_addr, f_cnt, false);
        assert_eq!(&phy[phy.len() - 4..], &mic, "downlink MIC valid");
        let key = if d.f_port == Some(0) { &self.nwk_s_key } else { &self.app_s_key };
        let payload = lorawan::encrypt_frm_payload(key, false, self.dev_addr, f_cnt, &d.frm_payload);
        ReceivedDownlink {
            confirmed: d.is_confirmed(),
            ack: d.fctrl.ack,
            adr: d.fctrl.adr,
            f_pending: d.fctrl.f_pending,
            f_cnt,
            f_port: d.f_port,
            payload,
            f_opts: d.f_opts.clone(),
        }
    }
}
