//! The command line as an operator meets it at 3 a.m. (issue 8, "Hardening"): exit
//! codes, the global flags, saved plans, what read-only commands leave behind, and what
//! a bad row or a large file does.

use std::path::Path;

use trueup::world::fixture;
use trueup::world::stage::{Staged, stage};

use crate::scratch::Scratch;
use crate::support::Trueup;

/// A fixture of `fixtures/plan/`, staged for real in a scratch folder (kept alive by the
/// returned `Scratch`), and its instant.
fn staged_fixture(name: &str) -> (Scratch, Staged, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/plan").join(name);
    let fx = fixture::load(name, &std::fs::read_to_string(path).unwrap()).unwrap();
    let scratch = Scratch::new("cli");
    let staged = stage(&fx.world, &scratch.join("w"), fx.now).unwrap();
    (scratch, staged, fx.now.to_string())
}

// ---------------------------------------------------------------------------------------
// Exit codes

/// What a row of [`EXIT_TABLE`] runs against, in a scratch folder of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Against {
    /// No machine: the command needs none (paths are still given, in the scratch folder).
    Nothing,
    /// A staged world with nothing to do (`0001_all_true`).
    Converged,
    /// A staged world with repairs pending (`0025_current_missing`: a broken link).
    Pending,
    /// An existing root and routes folder, and no state database at `--db`.
    NoDatabase,
}

/// The exit-code table of `trueup --help`, command by command: each subcommand in each
/// situation that applies to it. `{scratch}` in an argument is the row's scratch folder.
const EXIT_TABLE: &[(&str, Against, &[&str], i32)] = &[
    ("demo: success", Against::Nothing, &["demo", "--dir", "{scratch}/demo"], 0),
    ("demo: its folder is a file", Against::Nothing, &["demo", "--dir", "{scratch}/file"], 1),
    ("demo: usage", Against::Nothing, &["demo", "--no-such-flag"], 1),
    ("validate: success", Against::Nothing, &["validate"], 0),
    ("validate: an invalid spec", Against::Nothing, &["validate", "fixtures/validate/err/0003_unknown_target.yaml"], 1),
    ("validate: a missing file", Against::Nothing, &["validate", "no/such/spec.yaml"], 1),
    ("validate: usage", Against::Nothing, &["validate", "--no-such-flag"], 1),
    ("graph: success", Against::Nothing, &["graph"], 0),
    ("graph: a missing file", Against::Nothing, &["graph", "no/such/spec.yaml"], 1),
    ("graph: usage", Against::Nothing, &["graph", "--format", "png"], 1),
    ("simulate: success", Against::Nothing, &["simulate", "fixtures/plan/0025_current_missing.yaml"], 0),
    ("simulate: a missing file", Against::Nothing, &["simulate", "no/such/fixture.yaml"], 1),
    ("simulate: usage", Against::Nothing, &["simulate"], 1),
    ("plan: nothing to do", Against::Converged, &["plan", "--detailed-exitcode"], 0),
    ("plan: changes, not asked to say so", Against::Pending, &["plan"], 0),
    ("plan: changes pending", Against::Pending, &["plan", "--detailed-exitcode"], 2),
    ("plan: a missing database", Against::NoDatabase, &["plan", "--detailed-exitcode"], 1),
    ("plan: a missing spec", Against::Pending, &["plan", "--detailed-exitcode", "--spec", "no/such/spec.yaml"], 1),
    ("plan: usage", Against::Pending, &["plan", "--no-such-flag"], 1),
    ("plan: usage, a flag of apply", Against::Pending, &["plan", "--lock-timeout", "1s"], 1),
    ("apply: success", Against::Pending, &["apply"], 0),
    ("apply: nothing to do", Against::Converged, &["apply"], 0),
    ("apply: a missing saved plan", Against::Pending, &["apply", "no/such/plan.json"], 1),
    ("apply: a missing root", Against::Pending, &["apply", "--root", "{scratch}/typo"], 1),
    ("apply: usage", Against::Pending, &["apply", "--no-such-flag"], 1),
    ("apply: usage, a bad duration", Against::Pending, &["apply", "--lock-timeout", "soon"], 1),
    ("init: success", Against::NoDatabase, &["init"], 0),
    ("init: its folder is a file", Against::Nothing, &["init", "--db", "{scratch}/file/state.db"], 1),
    ("init: usage", Against::NoDatabase, &["init", "--no-such-flag"], 1),
    ("status: all well", Against::Converged, &["status", "--detailed-exitcode"], 0),
    ("status: repair needed, not asked to say so", Against::Pending, &["status"], 0),
    ("status: repair needed", Against::Pending, &["status", "--detailed-exitcode"], 2),
    ("status: a missing database", Against::NoDatabase, &["status", "--detailed-exitcode"], 1),
    ("status: stdout on /dev/full", Against::Converged, &["status", "{stdout=/dev/full}"], 1),
    ("status: usage", Against::Converged, &["status", "--no-such-flag"], 1),
    ("unlock: nothing to unlock", Against::Converged, &["unlock"], 0),
    ("unlock: a missing database", Against::NoDatabase, &["unlock"], 1),
    ("unlock: usage", Against::Converged, &["unlock", "--no-such-flag"], 1),
    ("deploy: success", Against::NoDatabase, &["deploy", "--project", "exit", "--source", "specs"], 0),
    (
        "deploy: a missing source",
        Against::NoDatabase,
        &["deploy", "--project", "exit", "--source", "{scratch}/nowhere"],
        1,
    ),
    (
        "deploy: a failed build",
        Against::Converged,
        &["deploy", "--project", "exit", "--source", "specs", "--build", "exit 3"],
        1,
    ),
    (
        "deploy: a project that is not a plain name",
        Against::NoDatabase,
        &["deploy", "--project", "a/b", "--source", "specs"],
        1,
    ),
    ("deploy: usage", Against::NoDatabase, &["deploy", "--source", "specs"], 1),
    ("work: nothing queued", Against::NoDatabase, &["work", "--once"], 0),
    ("work: its folder is a file", Against::Nothing, &["work", "--once", "--db", "{scratch}/file/state.db"], 1),
    ("work: usage", Against::NoDatabase, &["work", "--jobs", "0"], 1),
    ("serve: once, nothing to do", Against::Converged, &["serve", "--once"], 0),
    ("serve: once, repairs made", Against::Pending, &["serve", "--once", "--no-run"], 0),
    ("serve: its folder is a file", Against::Nothing, &["serve", "--once", "--db", "{scratch}/file/state.db"], 1),
    ("serve: usage", Against::NoDatabase, &["serve", "--interval", "0s"], 1),
    ("event: an event a final phase refuses", Against::Converged, &["event", "d0", "cancel"], 1),
    ("event: an unknown deployment", Against::Converged, &["event", "nope", "cancel"], 1),
    ("event: usage", Against::Converged, &["event", "d0"], 1),
    ("heartbeat: a finished deployment", Against::Converged, &["heartbeat", "d0"], 1),
    ("heartbeat: usage", Against::Converged, &["heartbeat"], 1),
    ("logs: success", Against::Converged, &["logs", "d0"], 0),
    ("logs: an unknown deployment", Against::Converged, &["logs", "nope"], 1),
    ("logs: a missing database", Against::NoDatabase, &["logs", "d0"], 1),
    ("logs: usage", Against::Converged, &["logs"], 1),
    ("test: all pass", Against::Nothing, &["test", "fixtures/machine"], 0),
    (
        "test: cases fail",
        Against::Nothing,
        &["test", "--spec", "fixtures/validate/ok/0007_renamed_phases.yaml", "fixtures/machine"],
        1,
    ),
    ("test: usage", Against::Nothing, &["test", "--format", "xml"], 1),
    ("completions: success", Against::Nothing, &["completions", "bash"], 0),
    ("completions: usage, an unknown shell", Against::Nothing, &["completions", "nosh"], 1),
    ("man: success", Against::Nothing, &["man"], 0),
    ("man: usage", Against::Nothing, &["man", "--no-such-flag"], 1),
    ("help: success", Against::Nothing, &["--help"], 0),
    ("version: success", Against::Nothing, &["--version"], 0),
    ("no command: usage", Against::Nothing, &[], 1),
    ("an unknown command: usage", Against::Nothing, &["no-such-command"], 1),
    ("a bad --now: usage", Against::Nothing, &["--now", "3am", "status"], 1),
];

/// The subcommands `trueup --help` lists.
fn subcommands() -> Vec<String> {
    let help = Trueup::new(["--help"]).run().stdout;
    let listed = help.split("Commands:\n").nth(1).unwrap().split("\n\n").next().unwrap();
    listed.lines().filter_map(|l| l.split_whitespace().next()).filter(|c| *c != "help").map(str::to_owned).collect()
}

#[test]
fn every_command_exits_as_the_table_says() {
    let mut failures = Vec::new();
    for (name, against, args, code) in EXIT_TABLE {
        let scratch = Scratch::new("exit");
        std::fs::write(scratch.join("file"), "").unwrap();
        let fixture = match against {
            Against::Converged => Some("0001_all_true.yaml"),
            Against::Pending => Some("0025_current_missing.yaml"),
            Against::Nothing | Against::NoDatabase => None,
        };
        let staged = fixture.map(|name| {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/plan").join(name);
            let fx = fixture::load(name, &std::fs::read_to_string(path).unwrap()).unwrap();
            (stage(&fx.world, &scratch.join("w"), fx.now).unwrap(), fx.now.to_string())
        });
        // Never the default paths, which are the machine's own: explicit ones in scratch.
        let mut run = match &staged {
            Some((staged, now)) => Trueup::new(Vec::<&str>::new()).staged(staged).now(now),
            None => Trueup::new(["--db"])
                .arg(scratch.join("state.db"))
                .arg("--root")
                .arg(&scratch.0)
                .arg("--routes-dir")
                .arg(&scratch.0),
        };
        let mut stdout = std::process::Stdio::piped();
        for arg in *args {
            if *arg == "{stdout=/dev/full}" {
                stdout = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap().into();
            } else {
                run = run.arg(arg.replace("{scratch}", &scratch.0.to_string_lossy()));
            }
        }
        let out = run.command().stdout(stdout).stderr(std::process::Stdio::piped()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(*code) {
            failures.push(format!(
                "{name}: `trueup {}` exited {:?}, not {code}:\n{stderr}",
                args.join(" "),
                out.status
            ));
        } else if stderr.contains("panicked") || (*code == 1 && !stderr.contains("error")) {
            failures.push(format!("{name}: `trueup {}` said:\n{stderr}", args.join(" ")));
        }
        if *against == Against::NoDatabase && *code != 0 && scratch.join("state.db").exists() {
            failures.push(format!("{name}: a database was created"));
        }
    }
    assert!(failures.is_empty(), "{} of {} rows failed:\n{}", failures.len(), EXIT_TABLE.len(), failures.join("\n"));
    // Every command is in the table, and each meets a usage error.
    for command in subcommands() {
        let rows: Vec<&str> =
            EXIT_TABLE.iter().filter(|r| r.2.first() == Some(&command.as_str())).map(|r| r.0).collect();
        assert!(rows.iter().any(|r| r.contains("usage")), "`{command}` has no usage error in the table: {rows:?}");
        assert!(rows.iter().any(|r| !r.contains("usage")), "`{command}` has only usage errors in the table");
    }
}

#[test]
fn exit_codes_are_one_table_in_the_help_and_the_readme() {
    let help = Trueup::new(["--help"]).run().stdout;
    let table = help.split("Exit codes:\n").nth(1).expect("`trueup --help` ends with the exit codes");
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let rows: Vec<(&str, &str)> =
        table.lines().filter_map(|l| l.trim().split_once("  ")).map(|(c, m)| (c, m.trim())).collect();
    assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), ["0", "1", "2", "130, 143", "141"], "{table}");
    for (code, meaning) in rows {
        assert!(readme.contains(&format!("| {code} | {meaning} |")), "the README's table lacks `{code}`: {meaning}");
    }
}

// ---------------------------------------------------------------------------------------
// The global `--spec`

const BAD_SPEC: &str = "fixtures/validate/err/0003_unknown_target.yaml";
const OTHER_SPEC: &str = "fixtures/validate/ok/0006_version_1_warns.yaml";

#[test]
fn validate_checks_the_global_spec() {
    let out = Trueup::new(["--spec", BAD_SPEC, "validate"]).code(1).run();
    assert!(out.stderr.contains(&format!("--> {BAD_SPEC}:")), "{}", out.stderr);
    let out = Trueup::new(["validate"]).env("TRUEUP_SPEC", BAD_SPEC).code(1).run();
    assert!(out.stderr.contains(&format!("{BAD_SPEC}: invalid")), "{}", out.stderr);
    let out = Trueup::new(["validate", "--spec", &format!("image={OTHER_SPEC}")]).run();
    assert_eq!(out.stdout, format!("{OTHER_SPEC}: valid (6 states, 1 warning)\n"));
    // A file named on the command line wins over the global flag.
    let out = Trueup::new(["--spec", BAD_SPEC, "validate", OTHER_SPEC]).run();
    assert_eq!(out.stdout, format!("{OTHER_SPEC}: valid (6 states, 1 warning)\n"));
}

#[test]
fn graph_draws_the_global_spec() {
    let drawn = Trueup::new(["graph", OTHER_SPEC]).run().stdout;
    let builtin = Trueup::new(["graph"]).run().stdout;
    assert_ne!(drawn, builtin);
    assert_eq!(Trueup::new(["graph", "--spec", OTHER_SPEC]).run().stdout, drawn);
    assert_eq!(Trueup::new(["graph"]).env("TRUEUP_SPEC", OTHER_SPEC).run().stdout, drawn);
    assert_eq!(Trueup::new(["--spec", &format!("git={OTHER_SPEC}"), "graph"]).run().stdout, drawn);
    assert_eq!(Trueup::new(["graph", "specs/deployment.yaml", "--spec", OTHER_SPEC]).run().stdout, builtin);
}

// ---------------------------------------------------------------------------------------
// Saved plans

#[test]
fn plan_out_never_replaces_what_is_not_a_saved_plan() {
    let (scratch, staged, now) = staged_fixture("0025_current_missing.yaml");
    let plan_out = |out: &Path| Trueup::new(["plan", "--out"]).arg(out).staged(&staged).now(&now);
    let db = std::fs::read(&staged.db).unwrap();
    let out = plan_out(&staged.db).code(1).run();
    assert!(out.stderr.contains("is the state database"), "{}", out.stderr);
    plan_out(&staged.db).arg("--force").code(1).run();
    assert!(std::fs::read(&staged.db).unwrap() == db, "the state database was changed");

    let target = scratch.join("notes.txt");
    std::fs::write(&target, "mine\n").unwrap();
    let link = scratch.join("link.json");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let out = plan_out(&link).arg("--force").code(1).run();
    assert!(out.stderr.contains("is a symbolic link"), "{}", out.stderr);
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    let out = plan_out(&scratch.0).code(1).run();
    assert!(out.stderr.contains("is a folder"), "{}", out.stderr);
    let fifo = scratch.join("fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let out = plan_out(&fifo).arg("--force").code(1).run();
    assert!(out.stderr.contains("not a regular file"), "{}", out.stderr);
    assert!(!std::fs::symlink_metadata(&fifo).unwrap().is_file());

    let out = plan_out(&target).code(1).run();
    assert!(out.stderr.contains("`--force`"), "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "mine\n");
    // A plan saved before is replaced; another file only with `--force`.
    let saved = scratch.join("plan.json");
    plan_out(&saved).run();
    plan_out(&saved).run();
    plan_out(&target).arg("--force").run();
    Trueup::new(["apply"]).arg(&target).staged(&staged).now(&now).run();
}

#[test]
fn apply_refuses_a_saved_plan_edited_by_hand() {
    let (scratch, staged, now) = staged_fixture("0025_current_missing.yaml");
    let saved = scratch.join("plan.json");
    Trueup::new(["plan", "--out"]).arg(&saved).staged(&staged).now(&now).run();
    let mut doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    let extra = serde_json::json!({ "project": "p1", "kind": "remove_route", "deployment": "d0", "reason": "tidy" });
    doc["actions"].as_array_mut().unwrap().push(extra);
    std::fs::write(&saved, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    for dry_run in [true, false] {
        let apply = Trueup::new(["apply"]).arg(&saved).staged(&staged).now(&now);
        let out = if dry_run { apply.arg("--dry-run") } else { apply }.code(1).run();
        assert!(
            out.stderr.contains("action 2 of the file, `- route p1 (targeted d0)` of project `p1`, is not in the plan"),
            "{}",
            out.stderr
        );
    }
    assert!(staged.routes_dir.join("p1.yaml").exists(), "the live project's route was removed");
    // Reasons are not checked: only what is done.
    doc["actions"].as_array_mut().unwrap().pop();
    doc["actions"][0]["reason"] = "reworded".into();
    std::fs::write(&saved, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    Trueup::new(["apply"]).arg(&saved).staged(&staged).now(&now).run();
}

#[test]
fn apply_refuses_an_endless_plan_file() {
    let scratch = Scratch::new("zero");
    let db = scratch.join("state.db");
    let out = Trueup::new(["apply", "/dev/zero", "--db"]).arg(&db).code(1).run();
    assert!(out.stderr.contains("saved plan `/dev/zero` is larger than 64 MiB"), "{}", out.stderr);
    assert!(!db.exists(), "a database was created for a plan that cannot be read");
}

// ---------------------------------------------------------------------------------------
// Read-only commands

#[test]
fn read_only_commands_never_create_a_database() {
    let scratch = Scratch::new("nodb");
    let db = scratch.join("typo/state.db");
    for args in [&["status"][..], &["plan"], &["plan", "--json"]] {
        let out = Trueup::new(args).arg("--db").arg(&db).code(1).run();
        assert!(out.stderr.contains("no state database at"), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains("`trueup init`"), "{args:?}: {}", out.stderr);
    }
    for args in [&["validate"][..], &["graph"], &["simulate", "fixtures/plan/0001_all_true.yaml"]] {
        Trueup::new(args).arg("--db").arg(&db).run();
    }
    assert!(!scratch.join("typo").exists(), "a read-only command created the database's folder");
    std::fs::create_dir(scratch.join("typo")).unwrap();
    std::fs::write(&db, "").unwrap();
    let out = Trueup::new(["status", "--db"]).arg(&db).code(1).run();
    assert!(out.stderr.contains("(an empty file)"), "{}", out.stderr);
    assert_eq!(std::fs::read(&db).unwrap(), b"");

    let out = Trueup::new(["init", "--db"]).arg(&db).run();
    assert!(out.stderr.contains("Created an empty state database"), "{}", out.stderr);
    // A root and routes folder that exist, so the configuration is sound.
    let folder = scratch.join("typo");
    Trueup::new(["status", "--db"]).arg(&db).arg("--root").arg(&folder).arg("--routes-dir").arg(&folder).run();
    let out = Trueup::new(["init", "--db"]).arg(&db).run();
    assert!(out.stderr.is_empty(), "a second init changes nothing: {}", out.stderr);
}

#[test]
fn an_older_schema_is_read_as_it_is() {
    let (_scratch, staged, now) = staged_fixture("0025_current_missing.yaml");
    // The current schema is read without a note.
    let out = Trueup::new(["plan"]).staged(&staged).now(&now).run();
    assert!(!out.stderr.contains("schema version"), "{}", out.stderr);
    let conn = rusqlite::Connection::open(&staged.db).unwrap();
    // Without what schemas 5 and 6 added: claims then recorded no worker process, and
    // the release window is read without its indexes.
    conn.execute_batch(
        "DROP INDEX deployments_newest; DROP INDEX deployments_backwards;
         DROP INDEX deployments_queue; DROP TABLE settings;
         ALTER TABLE deployments DROP COLUMN claim_host; ALTER TABLE deployments DROP COLUMN claim_pid;
         ALTER TABLE deployments DROP COLUMN claim_start;
         DELETE FROM schema_migrations WHERE version > 2; PRAGMA user_version = 2;",
    )
    .unwrap();
    drop(conn);
    let before = std::fs::read(&staged.db).unwrap();
    let out = Trueup::new(["plan", "--detailed-exitcode"]).staged(&staged).now(&now).code(2).run();
    assert!(out.stderr.contains("has schema version 2; `trueup apply` or `trueup init` migrates it"), "{}", out.stderr);
    Trueup::new(["status"]).staged(&staged).now(&now).run();
    assert!(std::fs::read(&staged.db).unwrap() == before, "a read-only command changed the database");

    let conn = rusqlite::Connection::open(&staged.db).unwrap();
    conn.execute_batch("DELETE FROM schema_migrations; PRAGMA user_version = 0;").unwrap();
    drop(conn);
    let out = Trueup::new(["status"]).staged(&staged).now(&now).code(1).run();
    assert!(out.stderr.contains("too old to read without migrating it; run `trueup init`"), "{}", out.stderr);
}

// ---------------------------------------------------------------------------------------
// Robust reading

/// A world with ids that would drive a terminal: an escape sequence and a newline.
const CONTROL_IDS: &str = r#"
description: "ids with control characters"
now: 2025-10-02T12:00:00Z
root: /var/www
projects:
  - { id: p1, services: [ { id: web, primary: true } ] }
  - { id: "\e[31mred", services: [ { id: web, primary: true } ] }
  - { id: "two\nlines", services: [ { id: web, primary: true } ] }
deployments:
  - { id: d0, project: p1, type: upload, phase: ACTIVE, finished_at: 2025-10-01T09:00:00Z }
  - { id: "d\e[2J", project: "two\nlines", type: upload, phase: "BUILD\eING", phase_updated_at: 2025-10-02T10:00:00Z }
files:
  /var/www/p1/deployments/d0/public/index.html: file
"#;

#[test]
fn ids_from_the_database_are_printed_escaped() {
    let fx = fixture::load("control.yaml", CONTROL_IDS).unwrap();
    let scratch = Scratch::new("control");
    let staged = stage(&fx.world, &scratch.join("w"), fx.now).unwrap();
    let now = fx.now.to_string();
    for args in [&["status"][..], &["status", "-v"], &["plan"], &["plan", "-v"]] {
        let out = Trueup::new(args).staged(&staged).now(&now).run();
        assert!(!out.stdout.contains('\x1b'), "{args:?} printed an escape character:\n{}", out.stdout);
        assert!(!out.stdout.contains("two\nlines"), "{args:?} printed a newline of an id:\n{}", out.stdout);
        assert!(out.stdout.contains(r"two\nlines"), "{args:?}:\n{}", out.stdout);
    }
}

/// Two projects whose `current` is missing.
const TWO_PROJECTS: &str = r#"
description: "two projects, each to relink"
now: 2025-10-02T12:00:00Z
root: /var/www
projects:
  - { id: p1, services: [ { id: web, primary: true } ] }
  - { id: p2, services: [ { id: web, primary: true } ] }
deployments:
  - { id: d1, project: p1, type: upload, phase: ACTIVE, finished_at: 2025-10-01T09:00:00Z }
  - { id: d2, project: p2, type: upload, phase: ACTIVE, finished_at: 2025-10-01T09:00:00Z }
files:
  /var/www/p1/deployments/d1/public/index.html: file
  /var/www/p2/deployments/d2/public/index.html: file
"#;

#[test]
fn one_unreadable_row_holds_back_its_project_only() {
    let cases = [
        ("UPDATE deployments SET finished_at = 'yesterday' WHERE id = 'd2'", "column `finished_at`"),
        ("UPDATE deployments SET attempts = 1 << 40 WHERE id = 'd2'", "column `attempts`: 1099511627776 is not"),
    ];
    for (edit, said) in cases {
        let fx = fixture::load("two.yaml", TWO_PROJECTS).unwrap();
        let scratch = Scratch::new("badrow");
        let staged = stage(&fx.world, &scratch.join("w"), fx.now).unwrap();
        let now = fx.now.to_string();
        rusqlite::Connection::open(&staged.db).unwrap().execute_batch(edit).unwrap();
        let doc = Trueup::new(["plan", "--json"]).staged(&staged).now(&now).run().json();
        let projects: Vec<&str> =
            doc["actions"].as_array().unwrap().iter().map(|a| a["project"].as_str().unwrap()).collect();
        assert!(!projects.is_empty() && projects.iter().all(|p| *p == "p1"), "{edit}: {doc:#}");
        let warning = format!("table `deployments`, row `d2`, {said}");
        assert!(doc["findings"].to_string().contains(&warning), "{edit}: {doc:#}");
        let out = Trueup::new(["status"]).staged(&staged).now(&now).run();
        assert!(out.stdout.contains(&warning), "{edit}: {}", out.stdout);
        Trueup::new(["apply"]).staged(&staged).now(&now).run();
        assert!(staged.root.join("p1/current").exists(), "{edit}: p1 is repaired");
        assert!(!staged.root.join("p2/current").exists(), "{edit}: p2 is left alone");
    }
}

/// A project named like a folder of the layout, beside a plain one.
const RESERVED: &str = r#"
description: "a project named webroot"
now: 2025-10-02T12:00:00Z
root: /var/www
projects:
  - { id: p1, services: [ { id: web, primary: true } ] }
  - { id: webroot, services: [ { id: web, primary: true } ] }
  - { id: current, services: [ { id: web, primary: true } ] }
deployments:
  - { id: d1, project: p1, type: upload, phase: ACTIVE, finished_at: 2025-10-01T09:00:00Z }
  - { id: current, project: p1, type: upload, phase: FAILED, finished_at: 2025-10-01T08:00:00Z }
  - { id: d2, project: webroot, type: upload, phase: ACTIVE, finished_at: 2025-10-01T09:00:00Z }
  - { id: d3, project: current, type: upload, phase: ACTIVE, finished_at: 2025-10-01T09:00:00Z }
files:
  /var/www/p1/deployments/d1/public/index.html: file
  /var/www/webroot/deployments/d2/public/index.html: file
  /var/www/current/deployments/d3/public/index.html: file
"#;

#[test]
fn projects_named_like_the_layout_are_left_alone() {
    let fx = fixture::load("reserved.yaml", RESERVED).unwrap();
    let scratch = Scratch::new("reserved");
    let staged = stage(&fx.world, &scratch.join("w"), fx.now).unwrap();
    let now = fx.now.to_string();
    let doc = Trueup::new(["plan", "--json"]).staged(&staged).now(&now).run().json();
    let projects: Vec<&str> =
        doc["actions"].as_array().unwrap().iter().map(|a| a["project"].as_str().unwrap()).collect();
    assert!(!projects.is_empty() && projects.iter().all(|p| *p == "p1"), "{doc:#}");
    for name in ["webroot", "current"] {
        let warning = format!("project name `{name}` is reserved by the layout");
        assert!(doc["findings"].to_string().contains(&warning), "{name}: {doc:#}");
    }
    Trueup::new(["apply"]).staged(&staged).now(&now).run();
    assert!(staged.root.join("webroot/deployments/d2/public/index.html").exists(), "webroot's release was moved");
    assert!(staged.root.join("p1/current").exists());
    assert!(!staged.root.join("webroot/current").exists() && !staged.root.join("webroot/webroot").exists());
}

#[test]
fn every_file_read_has_a_size_cap() {
    let out = Trueup::new(["validate", "/dev/zero"]).code(1).run();
    assert!(out.stderr.contains("spec `/dev/zero` is larger than 1 MiB"), "{}", out.stderr);
    let out = Trueup::new(["--spec", "/dev/zero", "graph"]).code(1).run();
    assert!(out.stderr.contains("spec `/dev/zero` is larger than 1 MiB"), "{}", out.stderr);
    let out = Trueup::new(["simulate", "/dev/zero"]).code(1).run();
    assert!(out.stderr.contains("fixture `/dev/zero` is larger than 64 MiB"), "{}", out.stderr);

    let (_scratch, staged, now) = staged_fixture("0025_current_missing.yaml");
    let route = staged.routes_dir.join("p1.yaml");
    let mut big = std::fs::read_to_string(&route).unwrap();
    while big.len() <= 256 << 10 {
        big.push_str("# padding, padding, padding, padding, padding, padding, padding, padding\n");
    }
    std::fs::write(&route, big).unwrap();
    let doc = Trueup::new(["plan", "--json"]).staged(&staged).now(&now).run().json();
    assert!(doc["findings"].to_string().contains("it is larger than 256 KiB"), "{doc:#}");
}

#[test]
fn an_over_budget_fixture_is_worded_for_a_person() {
    let scratch = Scratch::new("budget");
    let path = scratch.join("huge.yaml");
    let files: Vec<String> = (0..130_000).map(|i| format!("/r/{i}: file")).collect();
    let files = files.join(", ");
    std::fs::write(&path, format!("description: huge\nnow: 2025-10-02T12:00:00Z\nroot: /r\nfiles: {{{files}}}\n"))
        .unwrap();
    let out = Trueup::new(["simulate"]).arg(&path).code(1).run();
    assert!(
        out.stderr.contains("the file is too large or too deep to read: more than 250000 values"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("budget breached"), "{}", out.stderr);
}

#[test]
fn the_readme_shows_the_shape_apply_json_prints() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let shown = "outcomes: [{action: {project, kind, ..., reason}, status: {status, why?}}]";
    assert!(readme.contains(shown), "the README does not show `{shown}`");
    let (_scratch, staged, now) = staged_fixture("0025_current_missing.yaml");
    let doc = Trueup::new(["apply", "--json"]).staged(&staged).now(&now).run().json();
    let outcome = &doc["outcomes"][0];
    let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(outcome), ["action", "status"], "{doc:#}");
    assert_eq!(keys(&outcome["action"]).first().map(String::as_str), Some("project"), "{doc:#}");
    assert_eq!(keys(&outcome["action"]).last().map(String::as_str), Some("reason"), "{doc:#}");
    assert_eq!(outcome["status"], serde_json::json!({ "status": "done" }), "{doc:#}");
}

// ---------------------------------------------------------------------------------------
// Completions and the manual page

#[test]
fn completions_and_the_manual_page_come_from_the_clap_definitions() {
    let bash = Trueup::new(["completions", "bash"]).run().stdout;
    let scratch = Scratch::new("completions");
    let script = scratch.join("trueup.bash");
    std::fs::write(&script, &bash).unwrap();
    let syntax = std::process::Command::new("bash").arg("-n").arg(&script).output().unwrap();
    assert!(syntax.status.success(), "bash rejects the script: {}", String::from_utf8_lossy(&syntax.stderr));
    for command in ["plan", "apply", "status", "unlock", "init", "completions", "man"] {
        assert!(bash.contains(command), "bash completion lacks `{command}`");
    }
    assert!(Trueup::new(["completions", "zsh"]).run().stdout.starts_with("#compdef trueup"));
    let out = Trueup::new(["completions", "nosh"]).code(1).run();
    assert!(out.stderr.contains("possible values: bash, elvish, fish, powershell, zsh"), "{}", out.stderr);

    let man = Trueup::new(["man"]).run().stdout;
    assert!(man.contains(".TH trueup 1"), "{man}");
    for command in ["plan", "apply", "status", "unlock", "validate"] {
        assert!(man.contains(&format!("trueup\\-{command}(1)")), "the manual page lacks `{command}`:\n{man}");
    }
}

#[test]
fn colours_only_when_asked_or_on_a_terminal() {
    let fixture = "fixtures/plan/0045_many_stuck_after_reboot.yaml";
    let piped = Trueup::new(["simulate", fixture]).run().stdout;
    assert!(!piped.contains('\x1b'), "no colour in a pipe: {piped}");
    let always = Trueup::new(["simulate", "--color", "always", fixture]).env("NO_COLOR", "1").run().stdout;
    assert!(always.contains("    \x1b[33m~\x1b[0m resume"), "{always}");
    assert!(always.contains("    \x1b[31mx\x1b[0m fail"), "{always}");
    let json = Trueup::new(["simulate", "--color", "always", "--json", fixture]).run().stdout;
    assert!(!json.contains('\x1b'), "JSON is never coloured");
    Trueup::new(["simulate", "--color", "sometimes", fixture]).code(1).run();
}

#[test]
fn event_and_heartbeat_look_for_no_container_engine() {
    // A `DOCKER_HOST` trueup cannot use (tcp) refuses what needs containers; an event or a
    // heartbeat runs no phase, so it must not be refused for it.
    let (_scratch, staged, now) = staged_fixture("0002_queued_stuck_requeued.yaml");
    let run = |args: &[&str]| {
        let mut command = Trueup::new(args).staged(&staged).now(&now).command();
        command.env_remove("TRUEUP_CONTAINER_SOCKET").env("DOCKER_HOST", "tcp://127.0.0.1:2375");
        command.output().unwrap()
    };
    let out = run(&["heartbeat", "d1"]);
    assert_eq!(out.status.code(), Some(0), "a heartbeat: {}", String::from_utf8_lossy(&out.stderr));
    let out = run(&["event", "d1", "cancel"]);
    assert_eq!(out.status.code(), Some(0), "an event: {}", String::from_utf8_lossy(&out.stderr));
    // `plan` does need the engine: the same `DOCKER_HOST` is refused there, saying why.
    let out = run(&["plan"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DOCKER_HOST"));
}
