//! The command line: clap definitions and thin wrappers over library functions.
//!
//! Each subcommand parses its arguments, calls one library function and prints what it
//! returns. No reconcile logic lives here. This module (feature `cli`) is the only part
//! of the crate that prints or uses `anyhow`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::model::DeploymentType;
use crate::spec::{self, Spec, Specs};
use crate::time::Timestamp;

mod color;
mod demo;
mod deploy_cmds;
mod lease_cmds;
mod output;
mod plan_cmds;
mod serve;
mod signals;
mod spec_cmds;
mod test_cmd;

pub use output::{EXIT_BROKEN_PIPE, exit_code};
use output::{note, noteln, out, outln};
/// The exit codes of every command: the end of `trueup --help`, and the README's table
/// (a test keeps the two the same).
pub const EXIT_CODES: &str = "\
Exit codes:
  0  success: nothing to do, or all done; every spec valid; a deployment live; `serve` stopped
  1  error: usage, a failed action, case (`test`) or deployment, an invalid spec, a second `serve`
  2  with `--detailed-exitcode`: changes pending (`plan`), repair needed (`status`)
  130, 143  stopped by SIGINT or SIGTERM (the action in hand finished; a deployment resumes later)
  141  standard output was closed (piped into `head`): the command stopped quietly";

/// trueup resumes PaaS deployments that a crash left stuck, and heals what they broke.
///
/// It reads deployment state from a SQLite database and the real machine (release
/// folders, `current` and webroot symlinks, containers, Traefik route files), shows a
/// plan of repairs like `terraform plan`, and applies it idempotently.
///
/// Start with `trueup demo`, which builds a broken world in a temporary folder,
/// repairs it and shows each step.
#[derive(Debug, Parser)]
#[command(name = "trueup", version, about, long_about, max_term_width = 100, after_help = EXIT_CODES)]
pub struct Args {
    /// The state database (created by `trueup init` or the first `trueup apply`)
    #[arg(long, global = true, env = "TRUEUP_DB", default_value = "/var/lib/trueup/trueup.db")]
    pub db: PathBuf,

    /// The managed root: ROOT/PROJECT/deployments/ID, ROOT/PROJECT/current, ROOT/webroot/PROJECT
    #[arg(long, global = true, env = "TRUEUP_ROOT", default_value = "/var/www")]
    pub root: PathBuf,

    /// The folder of Traefik dynamic-configuration files, one per project
    #[arg(long, global = true, env = "TRUEUP_ROUTES_DIR", default_value = "/etc/traefik/dynamic")]
    pub routes_dir: PathBuf,

    /// The machine spec instead of the built-in `specs/deployment.yaml` (and `specs/image.yaml`
    /// for images): `FILE` for every
    /// deployment type, or `TYPE=FILE` (`upload`, `git` or `image`) for one type; repeat
    /// the flag, or separate with commas in `TRUEUP_SPEC`
    #[arg(
        id = "global_spec",
        long = "spec",
        global = true,
        env = "TRUEUP_SPEC",
        value_name = "[TYPE=]FILE",
        value_delimiter = ','
    )]
    pub specs: Vec<SpecArg>,

    /// List every healthy deployment in flight, instead of one line that sums them up
    #[arg(long, short, global = true, conflicts_with = "quiet")]
    pub verbose: bool,

    /// Say only what needs a person: warnings, errors, failed actions and the closing line
    #[arg(long, short, global = true)]
    pub quiet: bool,

    /// Colour the text output: `auto` on a terminal unless `NO_COLOR` is set
    #[arg(long, global = true, value_enum, default_value_t = color::ColorChoice::Auto, value_name = "WHEN")]
    pub color: color::ColorChoice,

    /// The container engine's Docker Engine API socket (Podman or Docker), or `none`;
    /// default: `DOCKER_HOST`, else /run/podman/podman.sock or /var/run/docker.sock if present
    #[arg(long, global = true, env = "TRUEUP_CONTAINER_SOCKET", value_name = "PATH")]
    pub container_socket: Option<String>,

    /// How old a helper container of a running deployment may grow before it is removed
    #[arg(long, global = true, env = "TRUEUP_HELPER_MAX_AGE", value_name = "DURATION", default_value = "1h")]
    pub helper_max_age: crate::time::Duration,

    /// Pretend the time is this instant (RFC 3339), e.g. to ask what would happen at 3 a.m.
    #[arg(long, global = true, value_name = "RFC3339")]
    pub now: Option<Timestamp>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build a broken PaaS in a temporary folder and watch trueup repair it
    ///
    /// Creates a state database, release folders, links and route files for five
    /// projects as a reboot left them (a build cut off, a deploy queued forever, an
    /// upload gone, `current` wrong or a real folder, a stale route), then shows the
    /// status, the plan, the apply and a second, empty plan. Needs no root privileges and
    /// touches nothing outside its folder.
    ///
    /// Example: trueup demo --dir /tmp/paas
    Demo(demo::DemoArgs),

    /// Check spec files and report every problem with its line and column
    ///
    /// Every problem in a file is reported in one run, each as `error: MESSAGE`, then
    /// ` --> FILE:LINE:COL`, the source line with a caret under the offending node, and a
    /// `help:` with the nearest valid name when one is close. Transitions that can never
    /// fire are warnings. With no file, checks each `--spec` (or `TRUEUP_SPEC`), else the
    /// built-in deployment spec. Exits 0 when every file is valid (warnings allowed), 1
    /// otherwise. The language is described in specs/README.md.
    ///
    /// Examples:
    ///   trueup validate
    ///   trueup --spec my-spec.yaml validate
    ///   trueup validate specs/deployment.yaml my-spec.yaml
    ///   trueup validate --json my-spec.yaml | jq '.[].diagnostics[].message'
    #[command(verbatim_doc_comment)]
    Validate(spec_cmds::ValidateArgs),

    /// Draw a spec as a Mermaid or Graphviz diagram
    ///
    /// Superstates are drawn as nested states (Mermaid) or clusters (dot), final states
    /// are marked (`--> [*]`, or a double border), guards are shown in brackets on the
    /// edges, and each phase's resume rule is a note beside it. With no file, draws the
    /// `--spec` for every type (or the only `--spec`), else the built-in deployment spec.
    ///
    /// Examples:
    ///   trueup graph > deployment.mmd
    ///   trueup graph --format dot | dot -Tsvg > deployment.svg
    ///   trueup graph my-spec.yaml --format mermaid
    #[command(verbatim_doc_comment)]
    Graph(spec_cmds::GraphArgs),

    /// Print the plan for a fixture world, with no side effects
    ///
    /// A fixture is one YAML file describing projects, deployments, files, containers and
    /// routes, and the instant to plan at (see fixtures/README.md). Nothing on this
    /// machine is read or changed: use it to ask "what would trueup do if...".
    ///
    /// Example: trueup simulate fixtures/plan/0006_building_upload_gone.yaml --json
    Simulate(plan_cmds::SimulateArgs),

    /// Run spec regression cases: fixture worlds against their expected plans, machine walks
    ///
    /// A plan case is a fixture world (fixtures/README.md); its expected actions and
    /// findings live in `DIR.expect/NAME.yaml` beside the case's folder `DIR`, written by
    /// `--update`. A machine case is a starting state, events and the state expected after
    /// each. Every case under the PATHs (default fixtures/) runs in parallel against the
    /// `--spec`; each failing case is printed with a diff (`-` expected, `+` actual), then
    /// `N passed, N failed` on the last line. A malformed case is reported with its file,
    /// line and column, and the others still run. Cases in a folder named `err` or ending
    /// in `-err` must be refused.
    ///
    /// Exit codes: 0 every case passed, 1 a case failed, or error.
    ///
    /// Examples:
    ///   trueup test
    ///   trueup test --spec my.yaml fixtures/plan
    ///   trueup test --spec my.yaml fixtures/plan --update && git diff fixtures/
    ///   trueup test --filter 0006 fixtures/plan
    ///   trueup test --format junit --out report.xml
    #[command(verbatim_doc_comment)]
    Test(test_cmd::TestArgs),

    /// Observe this machine and show the plan of repairs, changing nothing
    ///
    /// Reads the state database (--db), the managed root (--root) and the route files
    /// (--routes-dir), and prints what `trueup apply` would do, grouped by project, with
    /// the reason for each change. It only reads: a missing database is an error (create
    /// one with `trueup init`).
    ///
    /// Exit codes: 0 done, 1 error; with --detailed-exitcode, 2 when changes are pending.
    ///
    /// Examples:
    ///   trueup plan
    ///   trueup plan --now 2025-10-02T03:00:00Z      # what would happen at 3 a.m.?
    ///   trueup plan --out repairs.json && trueup apply repairs.json
    #[command(verbatim_doc_comment)]
    Plan(plan_cmds::PlanArgs),

    /// Make the repairs: resume or fail stuck deployments, heal links, fix routes
    ///
    /// Takes the apply lease (one writer at a time; a second apply waits up to
    /// --lock-timeout, then exits 1 naming the holder), observes, plans, shows the plan,
    /// applies it action by action, and prints each result and a summary. Every action
    /// is idempotent and journaled, so an apply killed halfway is repaired by running it
    /// again. One failing action never stops the others; the exit code is then 1.
    ///
    /// Ctrl-C (SIGINT) or SIGTERM stops it between two actions: the action in hand
    /// finishes, the rest are journaled as skipped, the lease is released, and it exits
    /// 130 (SIGINT) or 143 (SIGTERM); a second signal kills it at once.
    ///
    /// The lease records its holder's host and process: when the holder ran on this host
    /// and its process is gone (kill -9), the next apply takes the lease over at once and
    /// says from whom. A holder on another host is waited for until its lease lapses
    /// (--lease-ttl, 60s by default; --lock-timeout, 90s by default, outlasts it).
    /// `trueup unlock` frees a dead holder's lease without applying.
    ///
    /// With a FILE saved by `trueup plan --out`, applies exactly that plan, and refuses
    /// it if the world changed since, naming what changed.
    ///
    /// Examples:
    ///   trueup apply
    ///   trueup apply --dry-run
    ///   trueup apply repairs.json --lock-timeout 2m
    #[command(verbatim_doc_comment)]
    Apply(plan_cmds::ApplyArgs),

    /// Create the state database, or migrate it to this trueup's schema
    ///
    /// Creates the database at --db (and its folder) when there is none, or applies the
    /// migrations an older one lacks; a database that is not trueup's, or is newer, is
    /// refused and left untouched. `trueup apply` does the same on its first run; `plan`
    /// and `status` only read, and refuse a missing database.
    ///
    /// It also records the settings every command reads (flags override them): the
    /// proxy's address, the base domain, the static server that serves webroots, and the
    /// limits. A setting not given keeps its recorded value, or its default.
    ///
    /// Examples:
    ///   trueup --db /var/lib/trueup/trueup.db init
    ///   trueup init --proxy 127.0.0.1:8080 --webroot-upstream http://127.0.0.1:8081 --domain example.org
    #[command(verbatim_doc_comment)]
    Init(plan_cmds::InitArgs),

    /// Show each project's live release and link health, and every unfinished deployment
    ///
    /// For each project: the live deployment, whether `current` and the webroot link
    /// point where they should, and the deployment its route targets. For each
    /// deployment not in a final phase: its phase, how long since its last progress,
    /// whether it counts as stuck, and who holds it.
    ///
    /// Example: trueup status --json
    Status(plan_cmds::StatusArgs),

    /// Free the apply lease of an apply that died
    ///
    /// An apply killed with kill -9, or cut off by a crash, leaves its lease held. The
    /// next apply takes it over at once when the dead holder ran on this host; `unlock`
    /// frees it without applying anything. It releases the lease when its holder's
    /// process on this host is gone, or when the lease expired, and refuses a holder that
    /// may still run (alive on this host, or on another host before its lease expires),
    /// naming it.
    ///
    /// Exit codes: 0 released, or nothing to unlock; 1 the holder may still run, or error.
    ///
    /// Example:
    ///   trueup status && trueup unlock
    #[command(verbatim_doc_comment)]
    Unlock(lease_cmds::UnlockArgs),

    /// Run a deployment through its phases, in the foreground
    ///
    /// Queues a deployment of --project (created on first use) and runs it at once:
    /// pulls the source (a folder, a .tar.gz checked entry by entry, or a git repository
    /// at --ref), runs --build in it with a time limit, copies the output into
    /// ROOT/PROJECT/deployments/ID through a temporary folder, probes the new release
    /// before it is exposed, switches `current` and the webroot link, writes the Traefik
    /// route and checks through Traefik that the new release answers. Each phase is
    /// printed as it starts. A failed check puts the previous release back.
    ///
    /// Ctrl-C or SIGTERM stops the build's whole process group and leaves the deployment
    /// in its phase: `trueup apply` (or `trueup work`) resumes it from there, as it does
    /// after a kill -9. --detach only queues it, for `trueup work`.
    ///
    /// Exit codes: 0 live; 1 failed (the reason is printed) or error; 130, 143 stopped.
    ///
    /// Examples:
    ///   trueup deploy --project blog --source ./site --build 'make' --output public
    ///   trueup deploy --project blog --source file:///srv/git/blog.git --ref v2
    ///   trueup deploy --project blog --source site.tar.gz --detach
    #[command(verbatim_doc_comment)]
    Deploy(deploy_cmds::DeployArgs),

    /// Run queued deployments: a worker for `deploy --detach`
    ///
    /// Claims the oldest queued deployment of each project that nobody holds (one
    /// deployment of a project at a time, oldest first) and runs it to the end, up to
    /// --jobs at once. Two workers never run the same deployment. A claim names its
    /// process, so a worker killed with kill -9 is noticed at once and its deployment
    /// resumed. Without --once it waits for more until SIGINT or SIGTERM.
    ///
    /// Examples:
    ///   trueup work --once
    ///   trueup work --jobs 4
    #[command(verbatim_doc_comment)]
    Work(deploy_cmds::WorkArgs),

    /// Run as a daemon beside the PaaS API: resume at startup, then reconcile every hour
    ///
    /// Holds the daemon lease for its lifetime (one daemon per state database; a second
    /// exits 1 naming the holder; a dead daemon of this host is taken over at once). The
    /// startup sequence resumes incomplete deployments first, then repairs links,
    /// containers and routes (one apply cycle), then runs the resumed and queued
    /// deployments with --jobs workers, and only then logs `ready`. After that it runs a
    /// cycle every --interval and on SIGHUP, and picks up queued deployments every few
    /// seconds between cycles, whenever no deployment is running (a SIGHUP during a build
    /// waits for it). It takes the apply lease only for each cycle, so an
    /// operator's `trueup apply` between cycles runs at once.
    ///
    /// SIGTERM (or SIGINT) finishes the action in hand, stops running builds (their
    /// deployments are released, to be resumed), releases both leases and exits 0. Logs
    /// go to stderr through `tracing`, one summary line per cycle with its counts; --log-format
    /// json writes one JSON object per line.
    ///
    /// Exit codes: 0 stopped by SIGTERM; 1 another daemon runs, or error. With --once, it
    /// runs the startup sequence and exits as `apply` does: 0, 1, or 130/143.
    ///
    /// Examples:
    ///   trueup serve
    ///   trueup serve --interval 15m --jobs 4 --log-format json
    ///   trueup serve --once --no-run
    #[command(verbatim_doc_comment)]
    Serve(serve::ServeArgs),

    /// Fire an event on a deployment (`cancel`, ...), checked against its spec
    ///
    /// An event the deployment's phase does not accept is refused, naming the events it
    /// accepts. A deployment a live worker runs is refused too.
    ///
    /// Example: trueup event d20251002T120000Z-1a2b3c4d cancel
    Event(deploy_cmds::EventArgs),

    /// Record a sign of life of a deployment that the PaaS's own worker runs
    ///
    /// Its phase's `stuck_after` counts from now.
    ///
    /// Example: trueup heartbeat d20251002T120000Z-1a2b3c4d
    Heartbeat(deploy_cmds::HeartbeatArgs),

    /// Print a deployment's log, or follow it until the deployment finishes
    ///
    /// Examples:
    ///   trueup logs d20251002T120000Z-1a2b3c4d
    ///   trueup logs d20251002T120000Z-1a2b3c4d --follow
    #[command(verbatim_doc_comment)]
    Logs(deploy_cmds::LogsArgs),

    /// Print a shell completion script
    ///
    /// Examples:
    ///   trueup completions bash > /etc/bash_completion.d/trueup
    ///   trueup completions zsh > ~/.zfunc/_trueup
    #[command(verbatim_doc_comment)]
    Completions(CompletionsArgs),

    /// Print the manual page (roff), generated from this help
    ///
    /// Example:
    ///   trueup man > /usr/local/share/man/man1/trueup.1 && man trueup
    #[command(verbatim_doc_comment)]
    Man,
}

/// Arguments of `trueup completions`.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for
    pub shell: clap_complete::Shell,
}

/// Runs one parsed command line.
///
/// # Errors
///
/// Any failure, with its context chain, for `main` to print once.
pub fn run(mut args: Args) -> anyhow::Result<ExitCode> {
    // Links are written with absolute targets, so every path is made absolute up front:
    // a relative `--root` would otherwise produce links that resolve to nothing.
    for path in [&mut args.db, &mut args.root, &mut args.routes_dir] {
        let absolute =
            std::path::absolute(&*path).with_context(|| format!("cannot make `{}` absolute", path.display()))?;
        *path = crate::model::normalize(&absolute);
    }
    match &args.command {
        Command::Demo(cmd) => demo::demo(&args, cmd),
        Command::Validate(cmd) => spec_cmds::validate(&args, cmd),
        Command::Graph(cmd) => spec_cmds::graph(&args, cmd),
        Command::Simulate(cmd) => plan_cmds::simulate(&args, cmd),
        Command::Test(cmd) => test_cmd::test(&args, cmd),
        Command::Plan(cmd) => plan_cmds::plan(&args, cmd),
        Command::Apply(cmd) => plan_cmds::apply(&args, cmd),
        Command::Status(cmd) => plan_cmds::status(&args, cmd),
        Command::Init(cmd) => plan_cmds::init(&args, cmd),
        Command::Unlock(cmd) => lease_cmds::unlock(&args, cmd),
        Command::Deploy(cmd) => deploy_cmds::deploy(&args, cmd),
        Command::Work(cmd) => deploy_cmds::work(&args, cmd),
        Command::Serve(cmd) => serve::serve(&args, cmd),
        Command::Event(cmd) => deploy_cmds::event(&args, cmd),
        Command::Heartbeat(cmd) => deploy_cmds::heartbeat(&args, cmd),
        Command::Logs(cmd) => deploy_cmds::logs(&args, cmd),
        Command::Completions(cmd) => {
            let mut script = Vec::new();
            clap_complete::generate(cmd.shell, &mut <Args as clap::CommandFactory>::command(), "trueup", &mut script);
            out!("{}", String::from_utf8_lossy(&script))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            let mut page = Vec::new();
            clap_mangen::Man::new(<Args as clap::CommandFactory>::command())
                .render(&mut page)
                .context("cannot render the manual page")?;
            out!("{}", String::from_utf8_lossy(&page))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// One `--spec`: a file, for every deployment type or for one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecArg {
    /// The deployment type it is for; `None` for every type without a spec of its own.
    pub kind: Option<DeploymentType>,
    /// The spec file.
    pub path: PathBuf,
}

impl std::str::FromStr for SpecArg {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let typed = text.split_once('=').and_then(|(kind, path)| {
            DeploymentType::from_name(kind).map(|kind| SpecArg { kind: Some(kind), path: path.into() })
        });
        Ok(typed.unwrap_or_else(|| SpecArg { kind: None, path: text.into() }))
    }
}

/// The specs in force: each `--spec`, the built-in specs for every type without one
/// (`specs/deployment.yaml`, and `specs/image.yaml` for images unless a spec is given for
/// every type).
///
/// # Errors
///
/// When a file cannot be read or is not a valid spec (with its diagnostics), or two
/// specs are given for the same types.
pub fn load_specs(args: &[SpecArg]) -> anyhow::Result<Specs> {
    let untyped: Vec<&SpecArg> = args.iter().filter(|a| a.kind.is_none()).collect();
    let default = match untyped.as_slice() {
        [a, b, ..] => anyhow::bail!(
            "two specs for every deployment type: `{}` and `{}`; give one, and `TYPE=FILE` for a type of its own",
            a.path.display(),
            b.path.display()
        ),
        one => load_spec(one.first().map(|a| a.path.as_path()))?,
    };
    // With no spec given for every type, image deployments run the built-in image spec
    // unless one is given for them.
    let mut specs = if untyped.is_empty() { Specs::builtin() } else { Specs::one(default) };
    let mut seen = std::collections::BTreeSet::new();
    for arg in args {
        let Some(kind) = arg.kind else { continue };
        if !seen.insert(kind) {
            anyhow::bail!("two specs for `{}` deployments: give `--spec TYPE=FILE` once per type", kind.name());
        }
        specs = specs.with(kind, load_spec(Some(&arg.path))?);
    }
    Ok(specs)
}

/// One spec: the file at `path`, or the built-in one.
///
/// # Errors
///
/// When the file cannot be read or is not a valid spec (with its diagnostics).
pub fn load_spec(path: Option<&std::path::Path>) -> anyhow::Result<Spec> {
    let Some(path) = path else { return Ok(spec::default_spec()) };
    let name = path.display().to_string();
    let source = read_capped(path, "spec", SPEC_CAP).map_err(|e| match name.split_once('=') {
        // `imgae=FILE` is read as a file name: say what the prefix may be.
        Some((kind, _)) if !path.exists() => {
            let kinds: Vec<String> = DeploymentType::ALL.iter().map(|t| format!("`{}`", t.name())).collect();
            e.context(format!("`{kind}=` is not a deployment type: `--spec TYPE=FILE` takes {}", kinds.join(", ")))
        }
        _ => e,
    })?;
    match spec::load(&name, &source) {
        Ok((spec, warnings)) => {
            // A spec that loads may still deserve a look (a version-1 spec, a transition
            // that can never fire): said on stderr, so scripts reading stdout are unaffected.
            if !warnings.is_empty() {
                note!("{}", crate::diag::render(&name, &source, &warnings));
            }
            Ok(spec)
        }
        Err(diagnostics) => {
            anyhow::bail!("spec `{name}` is invalid:\n{}", crate::diag::render(&name, &source, &diagnostics))
        }
    }
}

/// The largest spec trueup reads: the built-in one is a few KiB.
pub const SPEC_CAP: u64 = 1 << 20;

/// Reads a file that trueup takes as input (a spec, a fixture, a saved plan), refusing
/// one larger than `cap` bytes (or endless, like `/dev/zero`) before it fills memory.
///
/// # Errors
///
/// When the file cannot be read, is too large or is not UTF-8, naming it and `what` it is.
pub fn read_capped(path: &std::path::Path, what: &str, cap: u64) -> anyhow::Result<String> {
    let bytes = read_capped_bytes(path, what, cap)?;
    String::from_utf8(bytes).with_context(|| format!("{what} `{}` is not UTF-8 text", path.display()))
}

/// [`read_capped`], as bytes.
///
/// # Errors
///
/// When the file cannot be read or is too large, naming it and `what` it is.
pub fn read_capped_bytes(path: &std::path::Path, what: &str, cap: u64) -> anyhow::Result<Vec<u8>> {
    use std::io::Read as _;
    let shown = path.display();
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(cap + 1).read_to_end(&mut bytes))
        .with_context(|| format!("cannot read {what} `{shown}`"))?;
    if bytes.len() as u64 > cap {
        let size = if cap >= 1 << 20 { format!("{} MiB", cap >> 20) } else { format!("{} KiB", cap >> 10) };
        anyhow::bail!("{what} `{shown}` is larger than {size}, the most trueup reads of a {what}");
    }
    Ok(bytes)
}

impl Args {
    /// `text` coloured as `--color` (and `NO_COLOR`) say, for standard output.
    pub fn paint(&self, text: &str) -> String {
        color::paint(text, self.color.enabled())
    }

    /// How much of what is healthy the text output lists.
    pub fn verbosity(&self) -> crate::plan::Verbosity {
        match (self.quiet, self.verbose) {
            (true, _) => crate::plan::Verbosity::Quiet,
            (false, true) => crate::plan::Verbosity::Verbose,
            (false, false) => crate::plan::Verbosity::Brief,
        }
    }
}

/// The instant to plan for: `--now`, or the system clock.
pub fn now(args: &Args) -> Timestamp {
    args.now.unwrap_or_else(crate::time::clock::now)
}
