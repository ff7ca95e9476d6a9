//! `cdsr-lab sweep slurm` on a real single-node Slurm cluster (munged, slurmctld and slurmd
//! from the distribution's packages) that the test starts on localhost with its own
//! slurm.conf in a temporary folder. Skipped, with a message, when those programs are not
//! installed or the test is not root (slurmd must run as root); `scripts/test.sh` installs them.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{cdsr_lab, run_json_status, smoke_sweep};

/// A single-node Slurm cluster on 127.0.0.1; stopped (daemons killed by pid) on drop.
struct SlurmCluster {
    dir: tempfile::TempDir,
    pids: Vec<PathBuf>,
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/usr/bin", "/sbin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    found
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl SlurmCluster {
    /// Starts the cluster, or says why it cannot.
    fn start() -> Result<SlurmCluster, String> {
        let mut missing = Vec::new();
        let mut prog = |n: &str| {
            find_program(n).unwrap_or_else(|| {
                missing.push(n.to_owned());
                PathBuf::new()
            })
        };
        let (munged, slurmctld, slurmd) = (prog("munged"), prog("slurmctld"), prog("slurmd"));
        for client in ["sbatch", "sinfo", "squeue", "scontrol"] {
            prog(client);
        }
        if !missing.is_empty() {
            return Err(format!(
                "not installed: {} (apt-get install -y slurm-wlm munge)",
                missing.join(", ")
            ));
        }
        let uid = Command::new("id")
            .arg("-u")
            .output()
            .map_err(|e| e.to_string())?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return Err("slurmd must run as root to start jobs".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let d = dir.path();
        for sub in ["munge", "state", "spool", "log"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let key: Vec<u8> = (0..1024u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        std::fs::write(d.join("munge/munge.key"), key).unwrap();
        chmod(&d.join("munge/munge.key"), 0o600);
        chmod(&d.join("munge"), 0o700);
        let sock = d.join("munge/munge.sock");
        let mut cluster = SlurmCluster {
            pids: vec![d.join("munge/munged.pid")],
            dir,
        };
        let d = cluster.dir.path().to_path_buf();
        checked(
            Command::new(&munged)
                .arg(format!(
                    "--key-file={}",
                    d.join("munge/munge.key").display()
                ))
                .arg(format!("--socket={}", sock.display()))
                .arg(format!(
                    "--pid-file={}",
                    d.join("munge/munged.pid").display()
                ))
                .arg(format!(
                    "--log-file={}",
                    d.join("munge/munged.log").display()
                ))
                .arg(format!("--seed-file={}", d.join("munge/seed").display()))
                .arg("--force"),
        )?;
        let host =
            String::from_utf8_lossy(&Command::new("hostname").arg("-s").output().unwrap().stdout)
                .trim()
                .to_owned();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let conf = format!(
            "ClusterName=cdsrtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={sock}
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
NodeName=cdsrnode NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=100 State=UNKNOWN
PartitionName=debug Nodes=cdsrnode Default=YES MaxTime=INFINITE State=UP
",
            ctld_port = free_port(),
            d_port = free_port(),
            sock = sock.display(),
            d = d.display(),
        );
        std::fs::write(d.join("slurm.conf"), conf).unwrap();
        cluster.pids.push(d.join("slurmctld.pid"));
        checked(cluster.cmd(&slurmctld).arg("-i"))?;
        cluster.pids.push(d.join("slurmd.pid"));
        checked(cluster.cmd(&slurmd).args(["-N", "cdsrnode"]))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = cluster
                .cmd(Path::new("sinfo"))
                .args(["-h", "-o", "%t"])
                .output();
            if out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "idle") {
                return Ok(cluster);
            }
            if Instant::now() > deadline {
                return Err(format!("the node never became idle:\n{}", cluster.logs()));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("slurm.conf")
    }

    /// A command that talks to this cluster.
    fn cmd(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", self.conf());
        if program
            .file_name()
            .is_some_and(|n| n == "slurmctld" || n == "slurmd")
        {
            c.arg("-f").arg(self.conf());
        }
        c
    }

    fn output(&self, program: &str, args: &[&str]) -> String {
        let out = self.cmd(Path::new(program)).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the queue holds no job.
    fn wait_empty(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.output("squeue", &["-h"]).trim().is_empty() {
            assert!(
                Instant::now() < deadline,
                "jobs still queued:\n{}",
                self.output("squeue", &[])
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn logs(&self) -> String {
        ["log/slurmctld.log", "log/slurmd.log"]
            .iter()
            .map(|f| {
                let text = std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                format!(
                    "== {f}\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for SlurmCluster {
    fn drop(&mut self) {
        for pid_file in self.pids.iter().rev() {
            if let Ok(pid) = std::fs::read_to_string(pid_file) {
                let _ = Command::new("kill").arg(pid.trim()).status();
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn checked(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(())
}

#[test]
fn job_array_runs_every_run_and_a_requeued_task_resumes() {
    let cluster = match SlurmCluster::start() {
        Ok(c) => c,
        // scripts/test.sh sets CDSR_EXPECT_SLURM=1 when it has Slurm installed: then a cluster
        // that does not start is a failure, not a skip, so CI cannot pass without this test.
        Err(why) if std::env::var("CDSR_EXPECT_SLURM").as_deref() == Ok("1") => {
            panic!("Slurm is installed (CDSR_EXPECT_SLURM=1) but the local cluster did not start: {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED sweep_slurm: no local Slurm cluster: {why}");
            return;
        }
    };
    let work = tempfile::tempdir().unwrap();
    let (sweep_file, ids) = smoke_sweep(work.path(), &[1, 2]);
    let out = work.path().join("out");
    let o = cdsr_lab()
        .args(["sweep", "slurm"])
        .arg(&sweep_file)
        .arg("--out")
        .arg(&out)
        .args(["--cpus-per-task", "1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let script = out.join("slurm/sweep.sbatch");
    let text = std::fs::read_to_string(&script).unwrap();
    assert!(
        text.contains(&format!("#SBATCH --array=0-{}\n", ids.len() - 1)),
        "{text}"
    );
    assert!(text.contains("#SBATCH --requeue\n"), "{text}");

    let job = cluster.output("sbatch", &["--parsable", script.to_str().unwrap()]);
    let job = job.trim().split(';').next().unwrap().to_owned();
    // Requeue task 0 once its run has written a checkpoint: the task must resume, not restart.
    let first = out.join("runs").join(&ids[0]);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !first.join("checkpoint/state.safetensors").is_file() {
        assert!(
            Instant::now() < deadline,
            "no checkpoint from task 0:\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let requeued = if run_json_status(&first).as_deref() != Some("complete") {
        cluster.output("scontrol", &["requeue", &format!("{job}_0")]);
        // A requeued job waits for a begin time in the future; let it start now.
        let _ = cluster.output(
            "scontrol",
            &["update", &format!("jobid={job}_0"), "starttime=now"],
        );
        true
    } else {
        false
    };
    cluster.wait_empty(Duration::from_secs(300));

    for (i, id) in ids.iter().enumerate() {
        let run = out.join("runs").join(id);
        assert_eq!(
            run_json_status(&run).as_deref(),
            Some("complete"),
            "run {id}; task output:\n{}",
            std::fs::read_to_string(out.join(format!("slurm/{job}_{i}.out"))).unwrap_or_default()
        );
        let record: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join(format!("status/{id}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(record["executor"], format!("slurm:{job}_{i}"));
        assert_eq!(record["state"], "complete");
        if i == 0 && requeued {
            assert_eq!(record["attempts"], 2, "{record}");
            assert_eq!(record["resumed"], true, "{record}");
        }
    }
    eprintln!("task 0 requeued mid-run: {requeued}");
    // A second script has nothing to submit.
    let o = cdsr_lab()
        .args(["sweep", "slurm"])
        .arg(&sweep_file)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("nothing to submit"));
}
