//! Readers for real GPU job traces: each row becomes a [`TraceJob`] with its
//! submission time, duration and GPU count. Malformed rows are errors naming
//! the line, never skipped silently.

use std::path::Path;

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
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, h)) if h.trim() == MS_ITP_HEADER => {}
        _ => {
            return Err(TraceError::Header {
                line: 1,
                expected: MS_ITP_HEADER,
            });
        }
    }
    let mut jobs = Vec::new();
    for (i, line) in lines.filter(|(_, l)| !l.trim().is_empty()) {
        let n = i + 1;
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
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, h)) if h.trim() == PHILLY_HEADER => {}
        _ => {
            return Err(TraceError::Header {
                line: 1,
                expected: PHILLY_HEADER,
            });
        }
    }
    let mut jobs = Vec::new();
    for (i, line) in lines.filter(|(_, l)| !l.trim().is_empty()) {
        let n = i + 1;
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
}
