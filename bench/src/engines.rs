//! The engines of a run besides the measuring thread's own work: the plain engine for the
//! whole run, and the engines (and weed cluster) each interleaving group starts and stops
//! ([`Engines::enter`], [`Engines::leave`]), with the names of their logs under `--out`.

use std::path::PathBuf;
use std::time::Duration;

use ring_client::Session;

use crate::engine::{Engine, EngineNetns, EngineOptions};
use crate::scenarios::{self, Ctx, EngineUse, NeedleEngine, NetnsCtx, Spec, Tls};
use crate::{interrupt, netns, weed, Error, Result};

/// SIGTERM, and a warning with its log if the engine does not exit with 0.
pub fn stop_engine(en: Engine) -> Result<()> {
    let log_tail = en.log_tail(30);
    let command = en.command_line().to_owned();
    let status = en.stop(Duration::from_secs(10))?;
    if !status.success() {
        eprintln!(
            "bench: warning: the engine exited with {status} after SIGTERM (expected exit 0)\nengine command: {command}\nengine log:\n{log_tail}"
        );
    }
    Ok(())
}

/// The engines of a run: the plain one (started before the measuring thread is pinned, for
/// the whole run); per UCX group, one with a UCX listener started for that group only; per
/// needle group, one per transport serving the weed volume directory, and the weed cluster
/// itself (started for the first needle group, kept for the rest of the run).
pub struct Engines {
    /// How engines are started; `None` when no scenario needs one.
    pub template: Option<EngineOptions>,
    pub plain: Option<Engine>,
    pub plain_session: Option<Session>,
    pub out: Option<PathBuf>,
    pub weed: Option<weed::WeedHost>,
    /// The Go tool that runs the weed cluster.
    pub ringlat: Option<PathBuf>,
    /// Where the weed cluster runs (the engine core).
    pub weed_core: usize,
    /// MiB of the file the weed host writes through its filer for the front-end scenarios
    /// (0: none of them runs).
    pub weed_fs_mb: u32,
    /// Cold needles the weed host uploads ([`scenarios::cold_pool`]; 0 without cold scenarios).
    pub weed_cold: u32,
    /// The namespace pair and its weed cluster (`needle.read.<size>.netns*`), made for the
    /// first group that needs it, kept for the rest of the run, removed when dropped.
    pub netns: Option<netns::NetnsHost>,
}

/// The engines started for one group.
#[derive(Default)]
pub struct GroupEngines {
    pub ucx: Option<Engine>,
    pub needle: Vec<(Tls, Engine)>,
    /// Across the namespace pair: the serving engine (in -a) and the client's (in -b).
    pub netns: Option<(Engine, Engine)>,
}

impl GroupEngines {
    pub fn of(&self, engine: EngineUse) -> Option<&Engine> {
        match engine {
            EngineUse::Ucx(_) => self.ucx.as_ref(),
            EngineUse::Needle(t) => self.needle.iter().find(|(u, _)| *u == t).map(|(_, e)| e),
            // The client's engine: its log has the lanes of its connection across the veth.
            EngineUse::Netns => self.netns.as_ref().map(|(_, c)| c),
            EngineUse::None | EngineUse::Plain | EngineUse::Own => None,
        }
    }

    pub fn all_mut(&mut self) -> impl Iterator<Item = &mut Engine> {
        self.ucx
            .iter_mut()
            .chain(self.needle.iter_mut().map(|(_, e)| e))
            .chain(self.netns.iter_mut().flat_map(|(s, c)| [s, c]))
    }
}

impl Engines {
    /// Sets `ctx` up for a group: the plain engine's session if a member uses it, a UCX
    /// engine started for the group if a member needs one, and for needle scenarios the weed
    /// cluster and an engine per transport serving its volume directory (returned).
    pub fn enter(&mut self, group: &[&'static Spec], ctx: &mut Ctx) -> Result<GroupEngines> {
        let mut started = GroupEngines::default();
        // A scenario with engines of its own gets the plain session too: the runner waits for
        // the plain engine to sleep before its blocks.
        if group
            .iter()
            .any(|s| matches!(s.engine, EngineUse::Plain | EngineUse::Own))
        {
            ctx.session = self.plain_session.take();
            ctx.socket = self.plain.as_ref().map(|e| e.socket.clone());
        }
        if group.iter().any(|s| s.netns) {
            self.enter_netns(group, ctx, &mut started)?;
        }
        if group.iter().any(|s| s.needs_weed && !s.netns) {
            if self.weed.is_none() {
                let ringlat = self.ringlat.as_deref().ok_or("the needle scenarios need ringlat")?;
                self.weed = Some(weed::WeedHost::start(
                    ringlat,
                    scenarios::NEEDLE_SIZES,
                    self.weed_fs_mb,
                    self.weed_cold,
                    self.weed_core,
                )?);
            }
            let info = self.weed.as_ref().expect("started above").info.clone();
            let mut needle_tls: Vec<Tls> = Vec::new();
            for s in group {
                if let EngineUse::Needle(t) = s.engine {
                    if !needle_tls.contains(&t) {
                        needle_tls.push(t);
                    }
                }
            }
            for tls in needle_tls {
                let mut opts = self.template.clone().ok_or("no engine options")?;
                opts.ucx = Some(tls);
                opts.seaweedfs_dir = Some(info.volume_dir.clone());
                opts.log_path = self.out.as_ref().map(|d| d.join(needle_log_name(group[0].name, tls)));
                let (mut e, s) = Engine::start(&opts)?;
                let addr = e
                    .ucx_listen_address(Duration::from_secs(15))
                    .map_err(|err| with_engine_log(err, &mut e))?;
                ctx.needle_engines.push(NeedleEngine {
                    tls,
                    session: s,
                    socket: e.socket.clone(),
                    address: addr,
                    binary: opts.binary.clone(),
                });
                started.needle.push((tls, e));
            }
            ctx.weed = Some(info);
        }
        let Some(tls) = scenarios::group_ucx(group) else {
            return Ok(started);
        };
        let mut opts = self.template.clone().ok_or("no engine options")?;
        opts.ucx = Some(tls);
        opts.log_path = self.out.as_ref().map(|d| d.join(ucx_log_name(group[0].name, tls)));
        let (mut e, mut s) = Engine::start(&opts)?;
        let (peer, addr) = e
            .ucx_listen_address(Duration::from_secs(15))
            .and_then(|addr| {
                s.connect_peer(&addr).map(|p| (p, addr.clone())).map_err(|err| {
                    format!("connecting the session to the engine's own UCX listener {addr}: {err}").into()
                })
            })
            .map_err(|err| with_engine_log(err, &mut e))?;
        ctx.ucx_session = Some(s);
        ctx.ucx_peer = Some(peer);
        ctx.ucx_socket = Some(e.socket.clone());
        ctx.ucx_address = Some(addr);
        started.ucx = Some(e);
        Ok(started)
    }

    /// The namespace pair (made for the first such group) and, when a member uses them, the
    /// serving engine in -a and the client's engine in -b.
    fn enter_netns(&mut self, group: &[&'static Spec], ctx: &mut Ctx, started: &mut GroupEngines) -> Result<()> {
        if self.netns.is_none() {
            let ringlat = self.ringlat.as_deref().ok_or("the needle scenarios need ringlat")?;
            self.netns = Some(netns::NetnsHost::start(
                ringlat,
                scenarios::NEEDLE_SIZES,
                self.weed_core,
            )?);
        }
        let host = self.netns.as_ref().expect("started above");
        let pair = &host.pair;
        let mut n = NetnsCtx {
            client_ns: pair.ns_b.clone(),
            server_ns: pair.ns_a.clone(),
            weed: host.info().clone(),
            engines: None,
        };
        if group.iter().any(|s| s.engine == EngineUse::Netns) {
            let template = self.template.clone().ok_or("no engine options")?;
            let size = group[0].name.split('.').nth(2).unwrap_or("x");
            let log = |side: &str| {
                self.out
                    .as_ref()
                    .map(|d| d.join(format!("engine-needle-{size}-netns-{side}.log")))
            };
            let mut server_opts = template.clone();
            server_opts.ucx = Some(Tls::Tcp);
            server_opts.seaweedfs_dir = Some(n.weed.volume_dir.clone());
            server_opts.log_path = log("server");
            server_opts.netns = Some(EngineNetns {
                name: pair.ns_a.clone(),
                listen: Some(format!("{}:0", pair.addr_a)),
                device: pair.dev_a.clone(),
            });
            let (mut server, server_session) = Engine::start(&server_opts)?;
            let addr = server
                .ucx_listen_address(Duration::from_secs(15))
                .map_err(|err| with_engine_log(err, &mut server))?;
            // The client's engine on a core of its own where there is one (both engines
            // spin on a read's path), else next to the serving one.
            let mut client_opts = template;
            if let Some(&c) = ctx
                .worker_cores
                .iter()
                .find(|&&c| c != ctx.engine_core && c != ctx.client_core)
            {
                client_opts.cores = vec![c];
            }
            client_opts.ucx = Some(Tls::Tcp);
            client_opts.log_path = log("client");
            client_opts.netns = Some(EngineNetns {
                name: pair.ns_b.clone(),
                listen: None,
                device: pair.dev_b.clone(),
            });
            let (client, client_session) = Engine::start(&client_opts)?;
            n.engines = Some((
                NeedleEngine {
                    tls: Tls::Tcp,
                    session: server_session,
                    socket: server.socket.clone(),
                    address: addr,
                    binary: server_opts.binary.clone(),
                },
                NeedleEngine {
                    tls: Tls::Tcp,
                    session: client_session,
                    socket: client.socket.clone(),
                    address: String::new(),
                    binary: client_opts.binary.clone(),
                },
            ));
            started.netns = Some((server, client));
        }
        ctx.netns = Some(n);
        Ok(())
    }

    /// Undoes [`Engines::enter`]: the plain session goes back, the group's engines stop (the
    /// weed cluster stays for later groups).
    pub fn leave(&mut self, started: GroupEngines, ctx: &mut Ctx) -> Result<()> {
        if let Some(s) = ctx.session.take() {
            self.plain_session = Some(s);
        }
        ctx.socket = None;
        drop(ctx.ucx_session.take());
        ctx.ucx_peer = None;
        ctx.ucx_socket = None;
        ctx.ucx_address = None;
        ctx.needle_engines.clear();
        ctx.weed = None;
        // The sessions go before their engines stop.
        ctx.netns = None;
        let mut first_err = None;
        for e in started
            .ucx
            .into_iter()
            .chain(started.needle.into_iter().map(|(_, e)| e))
            .chain(started.netns.into_iter().flat_map(|(s, c)| [c, s]))
        {
            if let Err(err) = stop_engine(e) {
                first_err.get_or_insert(err);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// The log file of a needle group's engine for `tls` under `--out`:
/// `engine-needle-<size>[-conc]-<tls>.log`, the size from the group's root (`needle.read.4k.http`).
fn needle_log_name(root: &str, tls: Tls) -> String {
    // A front-end group (`mount.randread.4k.http`): `engine-mount.randread.4k-<tls>.log`.
    if !root.starts_with("needle.read.") {
        return format!("engine-{}-{}.log", root.trim_end_matches(".http"), tls.name());
    }
    let size = root.split('.').nth(2).unwrap_or("x");
    // The concurrent reads' group (`needle.read.4k.http.c1`) beside the one-reader group.
    let conc = if scenarios::needle_concurrency(root).is_some() {
        "-conc"
    } else {
        ""
    };
    format!("engine-needle-{size}{conc}-{}.log", tls.name())
}

/// The log file of a UCX group's engine under `--out`: `engine-ucx-<tls>.log` for the
/// `ucx.*am_rtt*` group, `engine-ucx-<tls>-<what>.log` for the others (`read_bw`), named
/// after the group's root scenario (`ucx.raw_read_bw.sm`).
fn ucx_log_name(root: &str, tls: scenarios::Tls) -> String {
    let what = root.split('.').nth(1).unwrap_or("").trim_start_matches("raw_");
    if what.is_empty() || what == "am_rtt" {
        format!("engine-ucx-{}.log", tls.name())
    } else {
        format!("engine-ucx-{}-{what}.log", tls.name())
    }
}

/// Adds what the engine did to an error (unless it is Ctrl-C).
pub fn with_engine_log(e: Error, en: &mut Engine) -> Error {
    if e.is::<interrupt::Interrupted>() {
        return e;
    }
    let exited = en
        .try_wait()
        .map_or(String::new(), |s| format!("\nthe engine had exited: {s}"));
    format!(
        "{e}{exited}\nengine command: {}\nengine log (last lines):\n{}",
        en.command_line(),
        en.log_tail(30)
    )
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_ucx_group_logs_to_a_file_of_its_own() {
        use scenarios::Tls;
        assert_eq!(ucx_log_name("ucx.raw_am_rtt.sm", Tls::Sm), "engine-ucx-sm.log");
        assert_eq!(ucx_log_name("ucx.raw_am_rtt.tcp", Tls::Tcp), "engine-ucx-tcp.log");
        assert_eq!(ucx_log_name("ucx.raw_read_bw.sm", Tls::Sm), "engine-ucx-sm-read_bw.log");
        assert_eq!(
            ucx_log_name("ucx.raw_read_bw.tcp", Tls::Tcp),
            "engine-ucx-tcp-read_bw.log"
        );
        assert_eq!(
            needle_log_name("needle.read.4k.http", Tls::Sm),
            "engine-needle-4k-sm.log"
        );
        assert_eq!(
            needle_log_name("needle.read.4k.http.c1", Tls::Tcp),
            "engine-needle-4k-conc-tcp.log"
        );
        // Front-end groups do not overwrite the needle groups' logs.
        assert_eq!(
            needle_log_name("mount.randread.4k.http", Tls::Tcp),
            "engine-mount.randread.4k-tcp.log"
        );
        assert_eq!(needle_log_name("s3.get.1m.http", Tls::Sm), "engine-s3.get.1m-sm.log");
    }
}
