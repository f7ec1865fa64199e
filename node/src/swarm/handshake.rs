//! The chain-key step of a store connection, before noise.
//!
//! A store swarm admits only devices holding the chain's 32-byte key. The key
//! is proven twice, and no byte is encrypted twice:
//!
//! 1. **Challenge** (this module, on the raw TCP socket): each end sends a
//!    fresh 32-byte nonce; the dialer then sends a keyed blake3 MAC over both
//!    nonces, and the listener answers with its own MAC only after checking
//!    the dialer's. A device without the key sees one random nonce and a
//!    closed socket: no peer id, no static key, nothing a failed handshake
//!    would not show. Either end drops a wrong MAC at once.
//! 2. **Noise prologue** ([`prologue`]): the noise handshake that follows mixes
//!    a key-derived prologue into its transcript, so a relay that forwarded
//!    the challenge between two tills still cannot complete noise with either.
//!
//! From then on noise alone encrypts (one ChaCha20-Poly1305 pass per byte).

use std::io;
use std::time::Duration;

use futures_util::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes of a nonce and of a MAC.
const LEN: usize = 32;
/// The challenge must finish within this time.
pub const CHALLENGE_TIMEOUT: Duration = Duration::from_secs(10);

/// The per-chain keys derived from the chain's pre-shared key.
#[derive(Clone)]
pub struct ChainKey {
    mac: [u8; 32],
    prologue: [u8; 32],
}

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChainKey(..)")
    }
}

impl ChainKey {
    /// Derives the challenge and prologue keys from the chain's key.
    pub fn new(psk: &[u8; 32]) -> Self {
        Self {
            mac: blake3::derive_key("tillswarm store swarm challenge v1", psk),
            prologue: blake3::derive_key("tillswarm store swarm noise prologue v1", psk),
        }
    }

    /// The noise prologue: both ends must hold the same chain key for the
    /// noise handshake to complete.
    pub fn prologue(&self) -> Vec<u8> {
        self.prologue.to_vec()
    }

    fn mac(
        &self,
        dialer: bool,
        dialer_nonce: &[u8; LEN],
        listener_nonce: &[u8; LEN],
    ) -> blake3::Hash {
        let mut h = blake3::Hasher::new_keyed(&self.mac);
        h.update(if dialer { b"dialer" } else { b"listen" });
        h.update(dialer_nonce);
        h.update(listener_nonce);
        h.finalize()
    }
}

fn refused() -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        "store peer does not hold the chain key",
    )
}

/// Runs the challenge on a fresh connection; returns the socket for noise.
/// Fails (and the caller drops the socket) on a wrong MAC, an early close or
/// after [`CHALLENGE_TIMEOUT`].
pub async fn prove<S>(mut socket: S, key: ChainKey, dialer: bool) -> io::Result<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let exchange = async {
        let mine: [u8; LEN] = rand_nonce()?;
        socket.write_all(&mine).await?;
        socket.flush().await?;
        let mut theirs = [0u8; LEN];
        socket.read_exact(&mut theirs).await?;
        let (dn, ln) = if dialer {
            (&mine, &theirs)
        } else {
            (&theirs, &mine)
        };
        let mut got = [0u8; LEN];
        if dialer {
            socket.write_all(key.mac(true, dn, ln).as_bytes()).await?;
            socket.flush().await?;
            socket.read_exact(&mut got).await?;
            if key.mac(false, dn, ln) != blake3::Hash::from_bytes(got) {
                return Err(refused());
            }
        } else {
            socket.read_exact(&mut got).await?;
            // blake3::Hash compares in constant time.
            if key.mac(true, dn, ln) != blake3::Hash::from_bytes(got) {
                return Err(refused());
            }
            socket.write_all(key.mac(false, dn, ln).as_bytes()).await?;
            socket.flush().await?;
        }
        Ok(())
    };
    match tokio::time::timeout(CHALLENGE_TIMEOUT, exchange).await {
        Ok(Ok(())) => Ok(socket),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "store peer's chain-key challenge timed out",
        )),
    }
}

fn rand_nonce() -> io::Result<[u8; LEN]> {
    let mut n = [0u8; LEN];
    getrandom::fill(&mut n).map_err(|e| io::Error::other(format!("no randomness: {e}")))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio_util::compat::TokioAsyncReadCompatExt;

    async fn pair(a: [u8; 32], b: [u8; 32]) -> (io::Result<()>, io::Result<()>) {
        let (x, y) = tokio::io::duplex(1024);
        let (ra, rb) = tokio::join!(
            prove(x.compat(), ChainKey::new(&a), true),
            prove(y.compat(), ChainKey::new(&b), false)
        );
        (ra.map(drop), rb.map(drop))
    }

    #[tokio::test]
    async fn same_key_passes_and_another_key_fails_on_both_ends() {
        let (a, b) = pair([7; 32], [7; 32]).await;
        assert!(a.is_ok() && b.is_ok());
        let (a, b) = pair([7; 32], [8; 32]).await;
        assert!(a.is_err(), "the dialer must fail");
        let err = b.expect_err("the listener must refuse the dialer's MAC");
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    }

    #[tokio::test]
    async fn an_outsider_learns_one_random_nonce_and_a_closed_socket() {
        let (outsider, till) = tokio::io::duplex(1024);
        let listener = tokio::spawn(prove(till.compat(), ChainKey::new(&[7; 32]), false));
        let mut outsider = outsider;
        outsider.write_all(&[0u8; 32]).await.expect("nonce");
        outsider.write_all(&[0xAB; 32]).await.expect("forged MAC");
        let mut seen = Vec::new();
        outsider.read_to_end(&mut seen).await.expect("read");
        assert_eq!(seen.len(), 32, "only the till's nonce, then the end");
        let err = listener.await.expect("join").expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    }

    /// Whether a swarm holding `dialer` connects to one holding `listener`.
    async fn connects(listener: ChainKey, dialer: ChainKey) -> bool {
        use futures_util::StreamExt;
        use libp2p::identity::Keypair;
        use libp2p::swarm::SwarmEvent;
        let build = |k| super::super::build_swarm(Keypair::generate_ed25519(), k).expect("swarm");
        let (mut a, mut b) = (build(listener), build(dialer));
        a.listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("addr"))
            .expect("listen");
        let addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = a.select_next_some().await {
                break address;
            }
        };
        b.dial(addr).expect("dial");
        let outcome = async {
            loop {
                tokio::select! {
                    e = a.select_next_some() => if let SwarmEvent::IncomingConnectionError { .. } = e {
                        return false;
                    },
                    e = b.select_next_some() => match e {
                        SwarmEvent::ConnectionEstablished { .. } => return true,
                        SwarmEvent::OutgoingConnectionError { .. } => return false,
                        _ => {}
                    },
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(15), outcome)
            .await
            .expect("the dial ends one way or the other")
    }

    #[tokio::test]
    async fn a_relay_that_passes_the_challenge_still_fails_noise() {
        let good = ChainKey::new(&[7; 32]);
        assert!(
            connects(good.clone(), good.clone()).await,
            "same key connects"
        );
        assert!(!connects(good.clone(), ChainKey::new(&[8; 32])).await);
        // The challenge's key without the prologue's: what a relay that
        // forwarded a real till's challenge answers would hold.
        let relay = ChainKey {
            mac: good.mac,
            prologue: ChainKey::new(&[8; 32]).prologue,
        };
        assert!(
            !connects(good, relay).await,
            "noise must fail without the chain key"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_times_out() {
        let (_silent, till) = tokio::io::duplex(1024);
        let err = prove(till.compat(), ChainKey::new(&[7; 32]), false)
            .await
            .expect_err("timeout");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
