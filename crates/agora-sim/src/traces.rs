//! Readers for real GPU job traces: each row becomes a [`TraceJob`] with its
//! submission time, duration and GPU count. Malformed rows are errors naming
//! the line, never skipped silently; rows a format documents as no GPU job
//! (CPU-only pods, pods never scheduled) are left out and counted.
//!
//! Alibaba's traces (`cluster-trace-gpu-v2023` pods, `cluster-trace-gpu-v2025`
//! inference instances) carry no licence: they are read from where the user
//! keeps them, never copied into this repository (the tests use rows written
//! in their format).

use std::collections::BTreeMap;
use std::path::Path;

use agora_types::GpuModel;

/// One job of a trace. Times are seconds from the trace's first submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceJob {
    pub submit_s: u64,
    pub duration_s: u64,
    pub gpus: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("reading {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("line {line}: expected the header `{expected}`")]
    Header { line: usize, expected: &'static str },
    #[error("line {line}: {field}: `{value}` is not {what}")]
    Field {
        line: usize,
        field: &'static str,
        value: String,
        what: &'static str,
    },
    #[error("line {line}: expected {expected} columns, found {found}")]
    Columns { line: usize, expected: usize, found: usize },
}

const MS_ITP_HEADER: &str = "job_id,submission_time,duration,num_gpu";
const PHILLY_HEADER: &str = "timestamp,duration,num_gpus,gpu_time,cluster";

fn read(path: &Path) -> Result<String, TraceError> {
    std::fs::read_to_string(path).map_err(|error| TraceError::Read {
        path: path.display().to_string(),
        error,
    })
}

fn columns(line: &str, n: usize, number: usize) -> Result<Vec<&str>, TraceError> {
    let cols: Vec<&str> = line.split(',').map(str::trim).collect();
    if cols.len() != n {
        return Err(TraceError::Columns {
            line: number,
            expected: n,
            found: cols.len(),
        });
    }
    Ok(cols)
}

fn number<T: std::str::FromStr>(
    line: usize,
    field: &'static str,
    value: &str,
    what: &'static str,
) -> Result<T, TraceError> {
    value.parse().map_err(|_| TraceError::Field {
        line,
        field,
        value: value.to_string(),
        what,
    })
}

/// Seconds given as `66.0` or `66`: whole seconds, rounded down.
fn seconds(line: usize, field: &'static str, value: &str) -> Result<u64, TraceError> {
    let v: f64 = number(line, field, value, "a number of seconds")?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(TraceError::Field {
            line,
            field,
            value: value.to_string(),
            what: "a number of seconds",
        });
    }
    Ok(v as u64)
}

/// The non-empty lines after `header` (which must be the first line), with
/// their 1-based line numbers.
fn data_lines<'t>(text: &'t str, header: &'static str) -> Result<impl Iterator<Item = (usize, &'t str)>, TraceError> {
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, h)) if h.trim() == header => {}
        _ => {
            return Err(TraceError::Header {
                line: 1,
                expected: header,
            });
        }
    }
    Ok(lines.filter(|(_, l)| !l.trim().is_empty()).map(|(i, l)| (i + 1, l)))
}

/// Rebases submission times so the first job is submitted at 0, keeping file order for equal times.
fn rebase(mut jobs: Vec<TraceJob>) -> Vec<TraceJob> {
    let first = jobs.iter().map(|j| j.submit_s).min().unwrap_or(0);
    for j in &mut jobs {
        j.submit_s -= first;
    }
    jobs.sort_by_key(|j| j.submit_s);
    jobs
}

/// Microsoft ITP (`job_id,submission_time,duration,num_gpu`, seconds).
pub fn parse_ms_itp(text: &str) -> Result<Vec<TraceJob>, TraceError> {
    let lines = data_lines(text, MS_ITP_HEADER)?;
    let mut jobs = Vec::new();
    for (n, line) in lines {
        let c = columns(line, 4, n)?;
        jobs.push(TraceJob {
            submit_s: seconds(n, "submission_time", c[1])?,
            duration_s: seconds(n, "duration", c[2])?,
            gpus: number(n, "num_gpu", c[3], "a GPU count")?,
        });
    }
    Ok(rebase(jobs))
}

pub fn read_ms_itp(path: &Path) -> Result<Vec<TraceJob>, TraceError> {
    parse_ms_itp(&read(path)?)
}

/// Philly as flattened by AdaptDL (`timestamp,duration,num_gpus,gpu_time,cluster`),
/// timestamps `YYYY-MM-DD hh:mm:ss` in one time zone.
pub fn parse_philly(text: &str) -> Result<Vec<TraceJob>, TraceError> {
    let lines = data_lines(text, PHILLY_HEADER)?;
    let mut jobs = Vec::new();
    for (n, line) in lines {
        let c = columns(line, 5, n)?;
        let submit = timestamp(c[0]).ok_or_else(|| TraceError::Field {
            line: n,
            field: "timestamp",
            value: c[0].to_string(),
            what: "a `YYYY-MM-DD hh:mm:ss` time",
        })?;
        jobs.push(TraceJob {
            submit_s: submit,
            duration_s: seconds(n, "duration", c[1])?,
            gpus: number(n, "num_gpus", c[2], "a GPU count")?,
        });
    }
    Ok(rebase(jobs))
}

pub fn read_philly(path: &Path) -> Result<Vec<TraceJob>, TraceError> {
    parse_philly(&read(path)?)
}

const ALIBABA_PODS_HEADER: &str =
    "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time";
const ALIBABA_INSTANCES_HEADER: &str = "instance_sn,role,app_name,cpu_request,cpu_limit,gpu_request,gpu_limit,rdma_request,rdma_limit,memory_request,memory_limit,disk_request,disk_limit,max_instance_per_node,creation_time,scheduled_time,deletion_time";

/// What to do with a pod that shares one GPU (`num_gpu` 1, `gpu_milli` below 1000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fractional {
    /// Give it a whole GPU: Agora sells whole GPUs.
    #[default]
    RoundUp,
    /// Leave it out (counted in [`PodTrace::fractional_rejected`]).
    Reject,
}

/// Alibaba's GPU model codes in `gpu_spec` and the node list, by catalog name;
/// `G1`–`G3` are undisclosed and map to none.
fn alibaba_model(code: &str) -> Option<GpuModel> {
    let name = match code {
        "V100M16" => "V100-16GB",
        "V100M32" => "V100-32GB",
        "P100" => "P100",
        "T4" => "T4",
        "A10" => "A10",
        _ => return None,
    };
    Some(GpuModel::resolve(name).expect("in the catalog"))
}

/// An Alibaba 2023 pod trace: the GPU jobs, each with the models it accepts
/// (empty: any), and what was left out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodTrace {
    pub jobs: Vec<TraceJob>,
    /// Per job, the catalog models of its `gpu_spec`, in its order (empty: any model).
    pub gpu_models: Vec<Vec<GpuModel>>,
    /// Pods asking for no GPU.
    pub cpu_only: usize,
    /// Pods never scheduled (no `scheduled_time`): nothing ran.
    pub never_scheduled: usize,
    /// Pods sharing one GPU, given a whole one ([`Fractional::RoundUp`]).
    pub fractional_rounded: usize,
    /// Pods sharing one GPU, left out ([`Fractional::Reject`]).
    pub fractional_rejected: usize,
    /// Jobs whose `gpu_spec` named only undisclosed models (`G1`–`G3`): they accept any model.
    pub undisclosed_only: usize,
}

/// Alibaba `cluster-trace-gpu-v2023` pods (`openb_pod_list_*.csv`): a pod
/// with GPUs that was scheduled is a job submitted at `creation_time` that
/// runs from `scheduled_time` to `deletion_time` (its duration is the
/// difference); `gpu_spec` (`V100M16|V100M32`) lists the models it accepts.
pub fn parse_alibaba_pods(text: &str, fractional: Fractional) -> Result<PodTrace, TraceError> {
    let lines = data_lines(text, ALIBABA_PODS_HEADER)?;
    let mut out = PodTrace::default();
    let mut rows: Vec<(TraceJob, Vec<GpuModel>)> = Vec::new();
    for (n, line) in lines {
        let c = columns(line, 11, n)?;
        let gpus: u32 = number(n, "num_gpu", c[3], "a GPU count")?;
        let milli: u32 = number(n, "gpu_milli", c[4], "a thousandth of a GPU")?;
        let created = seconds(n, "creation_time", c[8])?;
        let deleted = seconds(n, "deletion_time", c[9])?;
        if gpus == 0 {
            out.cpu_only += 1;
            continue;
        }
        if c[10].is_empty() {
            out.never_scheduled += 1;
            continue;
        }
        let scheduled = seconds(n, "scheduled_time", c[10])?;
        if gpus == 1 && milli < 1000 {
            match fractional {
                Fractional::RoundUp => out.fractional_rounded += 1,
                Fractional::Reject => {
                    out.fractional_rejected += 1;
                    continue;
                }
            }
        }
        let codes: Vec<&str> = c[5].split('|').filter(|s| !s.is_empty()).collect();
        let mut models: Vec<GpuModel> = Vec::new();
        for code in &codes {
            match alibaba_model(code) {
                Some(m) if !models.contains(&m) => models.push(m),
                Some(_) => {}
                None if matches!(*code, "G1" | "G2" | "G3") => {}
                None => {
                    return Err(TraceError::Field {
                        line: n,
                        field: "gpu_spec",
                        value: c[5].to_string(),
                        what: "a list of V100M16, V100M32, P100, T4, A10, G1, G2, G3",
                    });
                }
            }
        }
        if !codes.is_empty() && models.is_empty() {
            out.undisclosed_only += 1;
        }
        rows.push((
            TraceJob {
                submit_s: created,
                duration_s: deleted.saturating_sub(scheduled.max(created)),
                gpus,
            },
            models,
        ));
    }
    let first = rows.iter().map(|(j, _)| j.submit_s).min().unwrap_or(0);
    rows.sort_by_key(|(j, _)| j.submit_s);
    for (mut job, models) in rows {
        job.submit_s -= first;
        out.jobs.push(job);
        out.gpu_models.push(models);
    }
    Ok(out)
}

pub fn read_alibaba_pods(path: &Path, fractional: Fractional) -> Result<PodTrace, TraceError> {
    parse_alibaba_pods(&read(path)?, fractional)
}

/// One GPU instance of an inference service (Alibaba 2025): a replica that
/// runs from `start_s` until `end_s`, or past the trace's end (None).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInstance {
    pub submit_s: u64,
    pub start_s: u64,
    pub end_s: Option<u64>,
    pub gpus: u32,
}

/// An inference service (`app_name`) and its GPU instances, by submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    /// At most this many of its instances on one node (None: no limit).
    pub max_per_node: Option<u32>,
    pub instances: Vec<ServiceInstance>,
}

/// An Alibaba 2025 instance trace: its services with GPU instances, and what was left out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceTrace {
    /// By name.
    pub services: Vec<Service>,
    /// Instances without a GPU (the CPU nodes of disaggregated serving).
    pub cpu_only: usize,
    /// GPU instances already running when the trace starts (no creation time): submitted at 0.
    pub running_at_start: usize,
}

impl ServiceTrace {
    pub fn instances(&self) -> usize {
        self.services.iter().map(|s| s.instances.len()).sum()
    }

    /// When the trace ends: its latest time (creation, start or deletion).
    pub fn end_s(&self) -> u64 {
        self.services
            .iter()
            .flat_map(|s| &s.instances)
            .map(|i| i.end_s.unwrap_or(i.start_s).max(i.submit_s))
            .max()
            .unwrap_or(0)
    }

    /// Every instance as a job for trace replay, by submission: submitted
    /// when created, running as long as it ran in the trace (from its
    /// scheduling to its deletion; one still running when the trace ends
    /// runs until then, at least a second). A replay places replicas as
    /// independent jobs: a service's `max_per_node` is not applied.
    pub fn as_jobs(&self) -> Vec<TraceJob> {
        let end = self.end_s();
        let mut jobs: Vec<TraceJob> = self
            .services
            .iter()
            .flat_map(|s| &s.instances)
            .map(|i| TraceJob {
                submit_s: i.submit_s,
                duration_s: i.end_s.unwrap_or(end).saturating_sub(i.start_s).max(1),
                gpus: i.gpus,
            })
            .collect();
        jobs.sort_by_key(|j| j.submit_s);
        jobs
    }
}

/// Alibaba `cluster-trace-gpu-v2025` inference instances
/// (`disaggregated_DLRM_trace.csv`): each GPU instance is a replica of its
/// service (`app_name`), created at `creation_time`, running from
/// `scheduled_time` to `deletion_time`. An empty or `NaN` creation or
/// scheduling time means before the trace began (0); an empty deletion
/// time, after it ended. Fractional GPU requests round up to whole GPUs.
pub fn parse_alibaba_instances(text: &str) -> Result<ServiceTrace, TraceError> {
    let lines = data_lines(text, ALIBABA_INSTANCES_HEADER)?;
    let mut out = ServiceTrace::default();
    let mut services: BTreeMap<String, Service> = BTreeMap::new();
    let time = |n: usize, field: &'static str, v: &str| -> Result<Option<u64>, TraceError> {
        if v.is_empty() || v.eq_ignore_ascii_case("nan") {
            Ok(None)
        } else {
            seconds(n, field, v).map(Some)
        }
    };
    for (n, line) in lines {
        let c = columns(line, 17, n)?;
        let gpu: f64 = number(n, "gpu_request", c[5], "a GPU count")?;
        if !(gpu.is_finite() && (0.0..=64.0).contains(&gpu)) {
            return Err(TraceError::Field {
                line: n,
                field: "gpu_request",
                value: c[5].to_string(),
                what: "a GPU count of 0 to 64",
            });
        }
        let per_node: i64 = number(n, "max_instance_per_node", c[13], "a count or -1")?;
        let created = time(n, "creation_time", c[14])?;
        let scheduled = time(n, "scheduled_time", c[15])?;
        let deleted = time(n, "deletion_time", c[16])?;
        if gpu == 0.0 {
            out.cpu_only += 1;
            continue;
        }
        if created.is_none() {
            out.running_at_start += 1;
        }
        let submit_s = created.unwrap_or(0);
        let start_s = scheduled.unwrap_or(0).max(submit_s);
        let service = services.entry(c[2].to_string()).or_insert_with(|| Service {
            name: c[2].to_string(),
            max_per_node: u32::try_from(per_node).ok().filter(|p| *p > 0),
            instances: Vec::new(),
        });
        service.instances.push(ServiceInstance {
            submit_s,
            start_s,
            end_s: deleted.map(|d| d.max(start_s)),
            gpus: gpu.ceil() as u32,
        });
    }
    for mut s in services.into_values() {
        s.instances.sort_by_key(|i| (i.submit_s, i.start_s));
        out.services.push(s);
    }
    Ok(out)
}

pub fn read_alibaba_instances(path: &Path) -> Result<ServiceTrace, TraceError> {
    parse_alibaba_instances(&read(path)?)
}

/// Seconds since 1970-01-01 of `YYYY-MM-DD hh:mm:ss` (proleptic Gregorian).
fn timestamp(text: &str) -> Option<u64> {
    let (date, time) = text.split_once(' ')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ms_itp_rows_rebased_and_sorted() {
        let jobs = parse_ms_itp("job_id,submission_time,duration,num_gpu\na,100,50,8\nb,40,10,1\n").unwrap();
        assert_eq!(
            jobs,
            [
                TraceJob {
                    submit_s: 0,
                    duration_s: 10,
                    gpus: 1
                },
                TraceJob {
                    submit_s: 60,
                    duration_s: 50,
                    gpus: 8
                }
            ]
        );
    }

    #[test]
    fn philly_timestamps_are_seconds_apart() {
        let text = "timestamp,duration,num_gpus,gpu_time,cluster\n2017-10-09 07:01:55,66.0,1,66.0,x\n2017-10-10 07:01:56,5.5,4,22,y\n";
        let jobs = parse_philly(text).unwrap();
        assert_eq!(jobs[1].submit_s, 86_401);
        assert_eq!((jobs[1].duration_s, jobs[1].gpus), (5, 4));
        assert_eq!(timestamp("1970-01-01 00:00:00"), Some(0));
        assert_eq!(timestamp("2000-03-01 00:00:00"), Some(951_868_800));
    }

    #[test]
    fn malformed_rows_name_the_line_and_field() {
        let err = parse_ms_itp("job_id,submission_time,duration,num_gpu\na,1,2,3\nb,1,x,3\n").unwrap_err();
        assert_eq!(err.to_string(), "line 3: duration: `x` is not a number of seconds");
        let err = parse_ms_itp("nope\n").unwrap_err();
        assert!(matches!(err, TraceError::Header { line: 1, .. }));
        let err =
            parse_philly("timestamp,duration,num_gpus,gpu_time,cluster\n2017-13-01 00:00:00,1,1,1,a\n").unwrap_err();
        assert!(err.to_string().starts_with("line 2: timestamp"), "{err}");
    }

    #[test]
    fn the_repository_traces_read_whole() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/traces");
        let c04 = read_ms_itp(&dir.join("ms-itp/cluster04.csv")).unwrap();
        assert_eq!(c04.len(), 15_802);
        assert_eq!(c04.iter().filter(|j| j.gpus == 8).count(), 2_779);
        let philly = read_philly(&dir.join("philly/philly.csv")).unwrap();
        assert_eq!(philly.len(), 82_247);
        assert_eq!(philly.iter().map(|j| j.gpus).max(), Some(128));
    }

    /// Rows written in the format of Alibaba's 2023 pod list (the trace
    /// itself stays out of the repository): CPU-only and never-scheduled
    /// pods are left out, a shared GPU is rounded up or rejected, and
    /// `gpu_spec` becomes catalog models.
    const PODS: &str =
        "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time
p0,12000,16384,1,1000,,LS,Running,100,1100,100
p1,6000,12288,1,460,V100M16|V100M32,LS,Succeeded,200,900,250
p2,4000,8192,0,0,,BE,Running,300,400,300
p3,11908,47104,1,1000,,BE,Pending,400,500,
p4,88000,327680,8,1000,G2,Burstable,Succeeded,50,5050,60
p5,16000,32768,2,1000,P100|G3|T4,LS,Failed,500,530,510
";

    #[test]
    fn alibaba_pods_become_jobs_with_their_models() {
        let t = parse_alibaba_pods(PODS, Fractional::RoundUp).unwrap();
        let m = |n: &str| GpuModel::resolve(n).unwrap();
        // Sorted by submission, rebased to the first (p4 at 50).
        let rows: Vec<(u64, u64, u32)> = t.jobs.iter().map(|j| (j.submit_s, j.duration_s, j.gpus)).collect();
        assert_eq!(rows, [(0, 4990, 8), (50, 1000, 1), (150, 650, 1), (450, 20, 2)]);
        assert_eq!(
            t.gpu_models,
            [
                vec![],
                vec![],
                vec![m("V100-16GB"), m("V100-32GB")],
                vec![m("P100"), m("T4")]
            ]
        );
        assert_eq!(
            (
                t.cpu_only,
                t.never_scheduled,
                t.fractional_rounded,
                t.fractional_rejected,
                t.undisclosed_only
            ),
            (1, 1, 1, 0, 1)
        );
        let rejected = parse_alibaba_pods(PODS, Fractional::Reject).unwrap();
        assert_eq!((rejected.jobs.len(), rejected.fractional_rejected), (3, 1));
        let bad = PODS.replace("P100|G3|T4", "H800");
        let e = parse_alibaba_pods(&bad, Fractional::RoundUp).unwrap_err();
        assert!(e.to_string().contains("line 7: gpu_spec: `H800`"), "{e}");
        let e = parse_alibaba_pods(&PODS.replace("p0,12000", "p0,12000,9"), Fractional::RoundUp).unwrap_err();
        assert!(e.to_string().contains("line 2: expected 11 columns"), "{e}");
    }

    /// Rows in the format of Alibaba's 2025 inference instances: CPU
    /// instances are left out; GPU instances are replicas of their service,
    /// with times missing before the trace's start or after its end.
    const INSTANCES: &str = "instance_sn,role,app_name,cpu_request,cpu_limit,gpu_request,gpu_limit,rdma_request,rdma_limit,memory_request,memory_limit,disk_request,disk_limit,max_instance_per_node,creation_time,scheduled_time,deletion_time
instance_0,HN,app_0,12,12,1,1,25,25,120.0,120.0,640.0,800.0,8,,,
instance_1,HN,app_0,12,12,1,1,25,25,120.0,120.0,680.0,800.0,8,475.00000000000006,623.0,91730.0
instance_2,CN,app_22,64,64,0,0,1,1,320.0,320.0,544.0,640.0,-1,475.0,623.0,
instance_3,HN,app_7,12,12,0.5,0.5,25,25,120.0,120.0,640.0,800.0,-1,NaN,NaN,1000.0
";

    #[test]
    fn alibaba_instances_become_service_replicas() {
        let t = parse_alibaba_instances(INSTANCES).unwrap();
        assert_eq!((t.cpu_only, t.running_at_start, t.instances()), (1, 2, 3));
        let names: Vec<&str> = t.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["app_0", "app_7"]);
        assert_eq!(t.services[0].max_per_node, Some(8));
        assert_eq!(
            t.services[0].instances,
            [
                ServiceInstance {
                    submit_s: 0,
                    start_s: 0,
                    end_s: None,
                    gpus: 1
                },
                ServiceInstance {
                    submit_s: 475,
                    start_s: 623,
                    end_s: Some(91_730),
                    gpus: 1
                }
            ]
        );
        // Half a GPU is a whole one; no density limit.
        assert_eq!(t.services[1].max_per_node, None);
        assert_eq!(t.services[1].instances[0].gpus, 1);
        let e = parse_alibaba_instances(&INSTANCES.replace(",0.5,0.5,", ",many,0.5,")).unwrap_err();
        assert!(e.to_string().contains("line 5: gpu_request: `many`"), "{e}");
    }

    /// For replay, instances are jobs that run as long as they ran in the
    /// trace; one never deleted runs until the trace's last time.
    #[test]
    fn alibaba_instances_replay_as_jobs_by_submission() {
        let t = parse_alibaba_instances(INSTANCES).unwrap();
        assert_eq!(t.end_s(), 91_730);
        let jobs: Vec<(u64, u64, u32)> = t.as_jobs().iter().map(|j| (j.submit_s, j.duration_s, j.gpus)).collect();
        // app_0's first instance runs from 0 to the end; app_7's from 0 to
        // its deletion at 1,000; app_0's second from 623 to 91,730.
        assert_eq!(jobs, [(0, 91_730, 1), (0, 1_000, 1), (475, 91_107, 1)]);
    }
}
