//! A minimal MQTT 3.1.1 health probe: CONNECT, wait for an accepting CONNACK, DISCONNECT.
//!
//! Hand-written rather than a second rumqttc client so that one probe is exactly one
//! short-lived TCP connection with no background task, reconnect or keep-alive.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why a probe failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ProbeError {
    /// The broker answered wrongly or closed the connection: it is broken.
    #[error("{0}")]
    Failed(String),
    /// No answer in time: broken, or only slow (a loaded machine).
    #[error("no CONNACK within {0} ms")]
    TimedOut(u128),
    /// The probe could not even try (e.g. this process is out of file descriptors): says
    /// nothing about the broker.
    #[error("probe could not connect: {0}")]
    Inconclusive(String),
}

/// Connects to `addr` as `client_id` (clean session) and waits up to `timeout` for a
/// CONNACK with return code 0.
pub(crate) async fn probe(addr: SocketAddr, client_id: &str, timeout: Duration) -> Result<(), ProbeError> {
    match tokio::time::timeout(timeout, exchange(addr, client_id)).await {
        Ok(result) => result,
        Err(_) => Err(ProbeError::TimedOut(timeout.as_millis())),
    }
}

async fn exchange(addr: SocketAddr, client_id: &str) -> Result<(), ProbeError> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| match e.kind() {
        // Nothing listens: the broker's listener is gone.
        std::io::ErrorKind::ConnectionRefused => ProbeError::Failed(format!("connect: {e}")),
        _ => ProbeError::Inconclusive(e.to_string()),
    })?;
    exchange_on(&mut stream, client_id).await.map_err(ProbeError::Failed)
}

async fn exchange_on(stream: &mut TcpStream, client_id: &str) -> Result<(), String> {
    stream.set_nodelay(true).ok();
    stream.write_all(&connect_packet(client_id, 10)).await.map_err(|e| format!("write CONNECT: {e}"))?;
    let mut ack = [0u8; 4];
    stream.read_exact(&mut ack).await.map_err(|e| format!("read CONNACK: {e}"))?;
    // MQTT 3.1.1 §3.2: 0x20, remaining length 2, session-present flags, return code.
    if ack[0] != 0x20 || ack[1] != 2 {
        return Err(format!("expected CONNACK, got packet type 0x{:02x}", ack[0]));
    }
    if ack[3] != 0 {
        return Err(format!("CONNACK refused with return code {}", ack[3]));
    }
    // §3.14: DISCONNECT, so the broker ends the session cleanly.
    let _ = stream.write_all(&[0xe0, 0x00]).await;
    let _ = stream.shutdown().await;
    Ok(())
}

/// An MQTT 3.1.1 CONNECT packet (§3.1): clean session, no will, no credentials.
pub(crate) fn connect_packet(client_id: &str, keep_alive_secs: u16) -> Vec<u8> {
    let id = client_id.as_bytes();
    let mut body = Vec::with_capacity(12 + id.len());
    body.extend_from_slice(&[0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02]);
    body.extend_from_slice(&keep_alive_secs.to_be_bytes());
    body.extend_from_slice(&(id.len() as u16).to_be_bytes());
    body.extend_from_slice(id);
    let mut packet = vec![0x10];
    encode_remaining_length(body.len(), &mut packet);
    packet.extend_from_slice(&body);
    packet
}

/// §2.2.3: seven bits per byte, least significant group first.
fn encode_remaining_length(mut len: usize, out: &mut Vec<u8>) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_packet_matches_the_spec_example_layout() {
        let p = connect_packet("ab", 10);
        assert_eq!(p, vec![0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 10, 0, 2, b'a', b'b']);
    }

    #[test]
    fn remaining_length_uses_continuation_bits() {
        let mut out = Vec::new();
        encode_remaining_length(321, &mut out);
        assert_eq!(out, vec![0xc1, 0x02]);
        out.clear();
        encode_remaining_length(127, &mut out);
        assert_eq!(out, vec![0x7f]);
    }

    #[tokio::test]
    async fn a_closed_port_fails_the_probe() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        assert!(probe(addr, "p", Duration::from_secs(2)).await.is_err());
    }

    #[tokio::test]
    async fn a_server_that_closes_without_connack_fails_the_probe() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 64];
            let _ = s.read(&mut buf).await;
        });
        let e = probe(addr, "p", Duration::from_secs(2)).await.unwrap_err();
        assert!(matches!(&e, ProbeError::Failed(r) if r.contains("CONNACK")), "{e}");
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_the_probe_out() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(s);
        });
        assert_eq!(probe(addr, "p", Duration::from_millis(200)).await, Err(ProbeError::TimedOut(200)));
        held.abort();
    }
}
