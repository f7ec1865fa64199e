//! `lan --netns`: the two network namespaces and their veth pair, the
//! child processes (this bench re-executed as `lan-peer` inside them) and
//! what each child does.

use super::*;

/// Two network namespaces joined by a veth pair; deleted on drop.
pub(super) struct Namespaces {
    a: String,
    b: String,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running `ip` (iproute2)")?;
    ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// `tc` (iproute2), like [`ip`].
fn ip_tc(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("tc")
        .args(args)
        .output()
        .context("running `tc` (iproute2)")?;
    ensure!(
        out.status.success(),
        "tc {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

impl Namespaces {
    pub(super) fn create(link_mbit: Option<u32>) -> anyhow::Result<Self> {
        remove_stale_namespaces();
        let pid = std::process::id();
        let ns = Self {
            a: format!("{NS_PREFIX}a-{pid}"),
            b: format!("{NS_PREFIX}b-{pid}"),
        };
        remove_on_signal(vec![ns.a.clone(), ns.b.clone()]);
        // From here on, dropping `ns` removes whatever exists of it.
        let (veth_a, veth_b) = (format!("tsb{pid}a"), format!("tsb{pid}b"));
        ip(&["netns", "add", &ns.a])?;
        ip(&["netns", "add", &ns.b])?;
        ip(&[
            "link", "add", &veth_a, "netns", &ns.a, "type", "veth", "peer", "name", &veth_b,
            "netns", &ns.b,
        ])?;
        for (name, dev, addr) in [(&ns.a, &veth_a, NS_ADDR_A), (&ns.b, &veth_b, NS_ADDR_B)] {
            ip(&["-n", name, "addr", "add", &format!("{addr}/24"), "dev", dev])?;
            ip(&["-n", name, "link", "set", dev, "up"])?;
            ip(&["-n", name, "link", "set", "lo", "up"])?;
        }
        if let Some(mbit) = link_mbit {
            // The data flows A -> B: shape A's egress. The bucket holds 10 ms
            // of traffic (at least 64 KiB) so the rate holds without timer
            // granularity cutting it.
            let burst = (u64::from(mbit) * 1_000_000 / 8 / 100).max(64 * 1024);
            ip_tc(&[
                "-n",
                &ns.a,
                "qdisc",
                "add",
                "dev",
                &veth_a,
                "root",
                "tbf",
                "rate",
                &format!("{mbit}mbit"),
                "burst",
                &burst.to_string(),
                "latency",
                "50ms",
            ])?;
        }
        Ok(ns)
    }

    /// `ip netns exec <ns> <this exe> lan-peer <args>`.
    fn peer(&self, ns: &str, args: &[String]) -> anyhow::Result<Command> {
        let exe = std::env::current_exe().context("finding this executable")?;
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).arg(exe).arg("lan-peer");
        c.args(args);
        Ok(c)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        // Deleting a namespace also deletes its end of the veth pair.
        for name in [&self.a, &self.b] {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// Removes namespaces of earlier runs whose bench process is gone.
fn remove_stale_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if let Some(pid) = stale_pid(name) {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                eprintln!("removing the stale network namespace {name}");
                let _ = ip(&["netns", "del", name]);
            }
        }
    }
}

/// The bench pid in a namespace name of ours (`tsblan-a-<pid>`).
pub(super) fn stale_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(NS_PREFIX)?;
    let (side, pid) = rest.split_once('-')?;
    if side != "a" && side != "b" {
        return None;
    }
    pid.parse().ok()
}

/// On Ctrl-C or SIGTERM: delete the namespaces and exit (the children exit when
/// their stdin closes with this process).
fn remove_on_signal(names: Vec<String>) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        let signalled = rt.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate()).ok()?;
            tokio::select! {
                r = tokio::signal::ctrl_c() => r.ok(),
                _ = term.recv() => Some(()),
            }
        });
        if signalled.is_some() {
            for name in &names {
                let _ = ip(&["netns", "del", name]);
            }
            eprintln!("interrupted: removed the bench's network namespaces");
            std::process::exit(130);
        }
    });
}

/// A child peer: lines from its stdout, commands to its stdin.
struct PeerProcess {
    what: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl PeerProcess {
    fn spawn(mut command: Command, what: &'static str) -> anyhow::Result<Self> {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting the {what}"))?;
        let stdout = child.stdout.take().context("child stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            what,
            stdin: child.stdin.take(),
            child,
            lines,
        })
    }

    /// Waits for a line starting with `tag`; returns the rest of it.
    fn expect(&mut self, tag: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => match line.strip_prefix(tag) {
                    Some(rest) => return Ok(rest.trim().to_owned()),
                    None => eprintln!("{}: {line}", self.what),
                },
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    bail!("the {} said no {tag:?} within {timeout:?}", self.what)
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!("the {} exited before saying {tag:?}", self.what)
                }
            }
        }
    }

    fn send(&mut self, line: &str) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("child stdin closed")?;
        writeln!(stdin, "{line}")?;
        stdin.flush()?;
        Ok(())
    }

    /// A's CPU seconds so far (the serving child answers `cpu`).
    fn cpu(&mut self) -> anyhow::Result<f64> {
        self.send("cpu")?;
        Ok(self.expect("CPU ", READY_TIMEOUT)?.parse()?)
    }

    /// Closes its stdin (the child then exits) and reaps it.
    fn finish(mut self) {
        self.stdin = None;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("the {} did not exit; killing it", self.what);
        // Drop kills it.
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SIGKILL to this one child's pid.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Longest a transfer may take in a child: generous, so a slow run still ends.
fn transfer_timeout(size: u64) -> Duration {
    Duration::from_secs(120 + size / (5 * MIB))
}

fn work_arg(work: &Work) -> String {
    work.path().display().to_string()
}

/// Raw TCP across the veth: the receiver in B's namespace, the sender in A's.
pub(super) fn tcp_netns(ns: &Namespaces, work: &Work) -> anyhow::Result<Measure> {
    let mut rx = PeerProcess::spawn(
        ns.peer(
            &ns.b,
            &[
                "--role".into(),
                "tcp-receive".into(),
                "--work".into(),
                work_arg(work),
                "--listen".into(),
                format!("{NS_ADDR_B}:0"),
            ],
        )?,
        "TCP receiver (B)",
    )?;
    let addr = rx.expect("READY ", READY_TIMEOUT)?;
    let mut tx = PeerProcess::spawn(
        ns.peer(
            &ns.a,
            &[
                "--role".into(),
                "tcp-send".into(),
                "--work".into(),
                work_arg(work),
                "--addr".into(),
                addr,
            ],
        )?,
        "TCP sender (A)",
    )?;
    let timeout = transfer_timeout(work.manifest.size);
    let sent: TcpEnd = serde_json::from_str(&tx.expect("RESULT ", timeout)?)?;
    let got: TcpEnd = serde_json::from_str(&rx.expect("RESULT ", timeout)?)?;
    tx.finish();
    rx.finish();
    let size = work.manifest.size;
    ensure!(
        sent.bytes == size && got.bytes == size,
        "TCP moved {} / {} of {size} bytes",
        sent.bytes,
        got.bytes
    );
    Ok(Measure {
        seconds: got.seconds,
        bytes: size,
        cpu_s: sent.cpu_s + got.cpu_s,
        cpu_sender_s: Some(sent.cpu_s),
        cpu_receiver_s: Some(got.cpu_s),
    })
}

/// The swarm across the veth: A serves in its namespace, B fetches in its own.
pub(super) fn swarm_netns(
    ns: &Namespaces,
    work: &Work,
    params: &Params,
    run: u32,
) -> anyhow::Result<Measure> {
    let limits = params.limits();
    let mut a = PeerProcess::spawn(
        ns.peer(
            &ns.a,
            &[
                "--role".into(),
                "serve".into(),
                "--work".into(),
                work_arg(work),
                "--listen".into(),
                format!("{NS_ADDR_A}:0"),
                "--max-uploads".into(),
                params.max_uploads.to_string(),
            ],
        )?,
        "swarm peer A",
    )?;
    let ready = a.expect("READY ", READY_TIMEOUT)?;
    let (peer, addr) = ready
        .split_once(' ')
        .with_context(|| format!("A's READY line {ready:?}"))?;
    let home = home_b(work.path(), run);
    let mut b = PeerProcess::spawn(
        ns.peer(
            &ns.b,
            &[
                "--role".into(),
                "fetch".into(),
                "--work".into(),
                work_arg(work),
                "--home".into(),
                home.display().to_string(),
                "--listen".into(),
                format!("{NS_ADDR_B}:0"),
                "--peer".into(),
                peer.into(),
                "--addr".into(),
                addr.into(),
                "--lan-in-flight".into(),
                limits.lan_in_flight.to_string(),
                "--per-peer-in-flight".into(),
                limits.per_peer_in_flight.to_string(),
            ],
        )?,
        "swarm peer B",
    )?;
    let outcome = (|| {
        b.expect("START", READY_TIMEOUT)?;
        let a0 = a.cpu()?;
        let fetched: Fetched =
            serde_json::from_str(&b.expect("RESULT ", transfer_timeout(work.manifest.size))?)?;
        let a1 = a.cpu()?;
        anyhow::Ok((fetched, a1 - a0))
    })();
    b.finish();
    a.finish();
    let (f, cpu_a) = outcome?;
    Ok(Measure {
        seconds: f.seconds,
        bytes: f.bytes,
        cpu_s: cpu_a + f.cpu_s,
        cpu_sender_s: Some(cpu_a),
        cpu_receiver_s: Some(f.cpu_s),
    })
}

/// What a `lan-peer` child does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Swarm peer A: serves the package from `<work>/a`.
    Serve,
    /// Swarm peer B: downloads it into a fresh `--home`.
    Fetch,
    /// TCP baseline sender (in A's namespace).
    TcpSend,
    /// TCP baseline receiver (in B's namespace).
    TcpReceive,
}

/// Arguments of the hidden `lan-peer` subcommand (`lan --netns` runs it).
#[derive(Debug, Clone, clap::Args)]
pub struct PeerArgs {
    /// What this child does.
    #[arg(long, value_enum)]
    pub role: Role,
    /// The bench's work folder (package file, manifest, A's store).
    #[arg(long)]
    pub work: PathBuf,
    /// Where to listen (serve, fetch, tcp-receive).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// B's home folder (its node key and fresh chunk store).
    #[arg(long)]
    pub home: Option<PathBuf>,
    /// A's peer id (fetch).
    #[arg(long)]
    pub peer: Option<String>,
    /// A's multiaddr (fetch) or the receiver's address (tcp-send).
    #[arg(long)]
    pub addr: Option<String>,
    /// B's planner `lan_in_flight`.
    #[arg(long, default_value_t = Limits::default().lan_in_flight)]
    pub lan_in_flight: usize,
    /// B's planner `per_peer_in_flight`.
    #[arg(long, default_value_t = Limits::default().per_peer_in_flight)]
    pub per_peer_in_flight: usize,
    /// A's `max_uploads`.
    #[arg(long, default_value_t = 4)]
    pub max_uploads: usize,
}

/// Exits this child when its stdin closes (the bench is done with it or gone).
fn exit_when_stdin_closes() {
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        std::process::exit(0);
    });
}

/// The `lan-peer` child: one end of a `--netns` transfer.
pub fn peer_main(args: PeerArgs) -> anyhow::Result<()> {
    let need = |v: &Option<String>, what: &str| {
        v.clone()
            .with_context(|| format!("--{what} is required for this role"))
    };
    match args.role {
        Role::Serve => {
            let manifest = load_manifest(&args.work)?;
            let listen = args.listen.context("--listen is required")?;
            let rt = runtime()?;
            let a = rt.block_on(async {
                let a = Peer::start(&home_a(&args.work), listen, 1, args.max_uploads).await?;
                a.track(&manifest).await?;
                anyhow::Ok(a)
            })?;
            println!("READY {} {}", a.net.peer_id, a.net.listen_addr);
            // The runtime's workers serve; this thread answers `cpu` until stdin closes.
            for line in std::io::stdin().lock().lines() {
                if line?.trim() == "cpu" {
                    println!("CPU {}", cpu_seconds()?);
                }
            }
            rt.block_on(a.stop());
            rt.shutdown_timeout(Duration::from_secs(5));
        }
        Role::Fetch => {
            exit_when_stdin_closes();
            let manifest = load_manifest(&args.work)?;
            let listen = args.listen.context("--listen is required")?;
            let home = args.home.clone().context("--home is required")?;
            let (peer, addr) = (need(&args.peer, "peer")?, need(&args.addr, "addr")?);
            let limits = Params {
                lan_in_flight: Some(args.lan_in_flight),
                per_peer_in_flight: Some(args.per_peer_in_flight),
                ..Params::default()
            }
            .limits();
            let rt = runtime()?;
            let fetched = rt.block_on(async {
                let b = Peer::start(&home, listen, 2, args.max_uploads).await?;
                let r = fetch_all(&b, &manifest, &peer, &addr, limits, || println!("START")).await;
                b.stop().await;
                r
            })?;
            println!("RESULT {}", serde_json::to_string(&fetched)?);
            rt.shutdown_timeout(Duration::from_secs(5));
        }
        Role::TcpReceive => {
            exit_when_stdin_closes();
            let listener = TcpListener::bind(args.listen.context("--listen is required")?)?;
            println!("READY {}", listener.local_addr()?);
            let end = tcp_receive(&listener)?;
            println!("RESULT {}", serde_json::to_string(&end)?);
        }
        Role::TcpSend => {
            exit_when_stdin_closes();
            let to: SocketAddr = need(&args.addr, "addr")?.parse()?;
            let cpu0 = cpu_seconds()?;
            let t0 = Instant::now();
            let bytes = tcp_send(&package_path(&args.work), to)?;
            let end = TcpEnd {
                seconds: t0.elapsed().as_secs_f64(),
                cpu_s: cpu_seconds()? - cpu0,
                bytes,
            };
            println!("RESULT {}", serde_json::to_string(&end)?);
        }
    }
    Ok(())
}
