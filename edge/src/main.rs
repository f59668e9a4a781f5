//! `orchestra-edge`: compress scans on the hospital side and send them to the segmentation
//! service. No libtorch, no Python: one static-ish binary next to the model file.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use orchestra_edge::input::{model_bytes, read_image, to_planes};
use orchestra_edge::nifti_write::write_labels;
use orchestra_edge::scan::{is_scan, read_scan};
use orchestra_edge::volume::{read_labels, LabelVolume, DEFAULT_MAX_VOXELS};
use orchestra_edge::{client, EdgeModel};

#[derive(Parser)]
#[command(
    name = "orchestra-edge",
    version,
    about = "Orchestra's edge: compress scans with C and send the bitstreams to the segmentation service"
)]
struct Cli {
    /// Threads for C's convolutions (default: every core).
    #[arg(long, global = true, env = "ORCHESTRA_EDGE_THREADS")]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compress images into bitstreams (one `.orc` file per image), or scans into volume
    /// streams (one `.ovol` file per scan, for volume models).
    Encode {
        #[arg(long)]
        model: PathBuf,
        /// Image files (PNG or JPEG) or scans (NIfTI `.nii`, `.nii.gz`, or a folder holding one
        /// DICOM series).
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// Output file (one image only).
        #[arg(short, long, conflicts_with = "out_dir")]
        out: Option<PathBuf>,
        /// Output folder: IMAGE_STEM.orc for each image.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Time encoding (C, binarization, range coding) of one input at a given side.
    Bench {
        #[arg(long)]
        model: PathBuf,
        /// Side of the input in pixels (any multiple of the model's downsampling factor).
        #[arg(long, default_value_t = 256)]
        size: usize,
        #[arg(long, default_value_t = 30)]
        rounds: usize,
    },
    /// Time C over one whole scan plane by plane on the direct kernels, per layer and against
    /// this CPU's measured FMA peak, on each thread count; `--tiles` adds the tiled unfold path.
    BenchVolume {
        #[arg(long)]
        model: PathBuf,
        /// A scan: NIfTI `.nii`, `.nii.gz`, or a DICOM series folder.
        #[arg(long)]
        scan: PathBuf,
        /// Thread counts to time, e.g. 1,2 (default: one, then every core).
        #[arg(long = "thread-counts", value_delimiter = ',')]
        thread_counts: Vec<usize>,
        /// Also time the tiled unfold path (what CPUs without AVX2 run), on the last count.
        #[arg(long)]
        tiles: bool,
        /// Write the results here as JSON (and the table beside it as .md).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Compress one image or scan, send it to the service, write what it returns: a label map
    /// (PNG) for an image, a label volume (NIfTI, `-o labels.nii.gz`) on the scan's own voxels
    /// and affine for a scan.
    SegmentRemote {
        #[command(flatten)]
        remote: RemoteArgs,
        /// An image (PNG, JPEG) or a scan (NIfTI `.nii`, `.nii.gz`, or a DICOM series folder).
        image: PathBuf,
        #[arg(short, long)]
        out: PathBuf,
    },
    /// A bounded load test: the images' bitstreams sent in turn from several threads.
    LoadTest {
        #[command(flatten)]
        remote: RemoteArgs,
        /// Image files, or folders whose PNG and JPEG files are used.
        #[arg(required = true)]
        images: Vec<PathBuf>,
        #[arg(long, default_value_t = 200)]
        requests: usize,
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
}

/// Where the service is and how to reach it.
#[derive(clap::Args)]
struct RemoteArgs {
    /// The service's base URL (https://host:port); no credentials in it.
    #[arg(long, value_parser = client::server_url)]
    server: String,
    #[arg(long)]
    model: PathBuf,
    /// A file whose first line is the bearer token.
    #[arg(long)]
    token_file: PathBuf,
    /// Trust only this CA certificate (PEM), e.g. the service's self-signed one.
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// Seconds one request may take, connection included.
    #[arg(long, default_value_t = 30)]
    timeout_s: u64,
}

/// A user's error is one line (the chain of causes with `: `), whatever RUST_BACKTRACE says;
/// a backtrace is for bugs (panics), which still get theirs.
fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Some(n) = cli.threads {
        // candle sizes its thread pool and gemm's parallelism from this variable.
        std::env::set_var("RAYON_NUM_THREADS", n.max(1).to_string());
    }
    match cli.command {
        Command::Encode {
            model,
            images,
            out,
            out_dir,
        } => encode(&model, &images, out.as_deref(), out_dir.as_deref()),
        Command::Bench { model, size, rounds } => bench(&model, size, rounds),
        Command::BenchVolume {
            model,
            scan,
            thread_counts,
            tiles,
            out,
        } => bench_volume(&model, &scan, thread_counts, tiles, out.as_deref()),
        Command::SegmentRemote { remote, image, out } => segment_remote(&remote, &image, &out),
        Command::LoadTest {
            remote,
            images,
            requests,
            concurrency,
        } => load_test(&remote, &images, requests, concurrency),
    }
}

fn load_model(path: &Path) -> Result<EdgeModel> {
    Ok(EdgeModel::load(path)?)
}

/// One image's bitstream and the time C and the coder took.
fn encode_one(model: &EdgeModel, path: &Path) -> Result<(Vec<u8>, Duration)> {
    let image = read_image(path)?;
    let side = model.input_size as u32;
    if (image.width(), image.height()) != (side, side) {
        tracing::info!(
            image = %path.display(),
            width = image.width(),
            height = image.height(),
            "resizing to the model's {side}x{side}"
        );
    }
    let bytes = model_bytes(&image, side, model.in_channels);
    let started = Instant::now();
    let x = to_planes(&bytes, model.in_channels, model.input_size).map_err(anyhow::Error::msg)?;
    let stream = model.encode(&x)?;
    Ok((stream, started.elapsed()))
}

fn encode(model: &Path, images: &[PathBuf], out: Option<&Path>, out_dir: Option<&Path>) -> Result<()> {
    let m = load_model(model)?;
    if out.is_some() && images.len() > 1 {
        bail!(
            "-o names one output file; give --out-dir for {} images",
            images.len()
        );
    }
    if let Some(dir) = out_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let progress = progress_bar(images.len() as u64, "encoding");
    let (mut total_bytes, mut total_time) = (0usize, Duration::ZERO);
    for image in images {
        let target = |extension: &str| -> Result<PathBuf> {
            Ok(match (out, out_dir) {
                (Some(o), _) => o.to_path_buf(),
                (None, Some(d)) => d.join(stem_of(image)?).with_extension(extension),
                (None, None) => image.with_extension(extension),
            })
        };
        if is_scan(image) {
            let started = Instant::now();
            let v = m.encode_volume(read_scan(image, DEFAULT_MAX_VOXELS)?)?;
            let elapsed = started.elapsed();
            let target = target("ovol")?;
            write_atomically(&target, &v.bytes)?;
            progress.suspend(|| {
                println!(
                    "{}: {} bytes ({} geometry + {} code) for {} voxels = {:.5} bpp ({:.5} without the geometry) in {:.0} ms",
                    target.display(),
                    v.bytes.len(),
                    v.bytes.len() - v.code_bytes,
                    v.code_bytes,
                    v.voxels,
                    8.0 * v.bytes.len() as f64 / v.voxels as f64,
                    8.0 * v.code_bytes as f64 / v.voxels as f64,
                    elapsed.as_secs_f64() * 1e3
                )
            });
            progress.inc(1);
            continue;
        }
        let (stream, elapsed) = encode_one(&m, image)?;
        let target = target("orc")?;
        write_atomically(&target, &stream)?;
        let size = m.codec.describe(&stream, m.pixels())?;
        progress.suspend(|| {
            println!(
                "{}: {size} in {:.2} ms",
                target.display(),
                elapsed.as_secs_f64() * 1e3
            )
        });
        progress.inc(1);
        total_bytes += stream.len();
        total_time += elapsed;
    }
    progress.finish_and_clear();
    if images.len() > 1 {
        println!(
            "{} images: {:.5} bpp on average, {:.2} ms per image",
            images.len(),
            8.0 * total_bytes as f64 / (m.pixels() * images.len()) as f64,
            total_time.as_secs_f64() * 1e3 / images.len() as f64
        );
    }
    Ok(())
}

/// Median time to encode one textured input of `size` (after three warm-up rounds).
fn bench(model: &Path, size: usize, rounds: usize) -> Result<()> {
    let m = load_model(model)?;
    let bytes: Vec<u8> = (0..size * size * m.in_channels)
        .map(|i| ((i * 7919) % 251) as u8)
        .collect();
    let x = to_planes(&bytes, m.in_channels, size).map_err(anyhow::Error::msg)?;
    let mut times = Vec::with_capacity(rounds);
    let mut stream = Vec::new();
    for round in 0..rounds.max(1) + 3 {
        let started = Instant::now();
        stream = m.encode(&x)?;
        if round >= 3 {
            times.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "every core".into());
    println!(
        "encode {size}x{size}: median {:.2} ms, min {:.2} ms over {} rounds ({} threads), {} bytes",
        times[times.len() / 2],
        times[0],
        times.len(),
        threads,
        stream.len()
    );
    Ok(())
}

/// `bench-volume`: C over one whole scan, timed per layer, as a table (and JSON with `out`).
fn bench_volume(
    model: &Path,
    scan: &Path,
    threads: Vec<usize>,
    tiles: bool,
    out: Option<&Path>,
) -> Result<()> {
    use orchestra_edge::volume_bench::{bench_volume, peak_rss_mb, table};
    let m = load_model(model)?;
    let started = Instant::now();
    let volume =
        read_scan(scan, DEFAULT_MAX_VOXELS).with_context(|| format!("reading {}", scan.display()))?;
    eprintln!(
        "{}: {:?} voxels read in {:.1} s, peak RSS {:.0} MB",
        scan.display(),
        volume.geometry.sides,
        started.elapsed().as_secs_f64(),
        peak_rss_mb()
    );
    let threads = if threads.is_empty() {
        let all = std::thread::available_parallelism().map_or(1, |n| n.get());
        if all > 1 {
            vec![1, all]
        } else {
            vec![1]
        }
    } else {
        threads
    };
    if threads.contains(&0) {
        bail!("--thread-counts: 0 threads");
    }
    let result = bench_volume(&m, volume, &threads, tiles, |line| eprintln!("  {line}"))?;
    let text = table(&result);
    print!("{text}");
    if let Some(path) = out {
        write_atomically(path, &serde_json::to_vec_pretty(&result)?)?;
        write_atomically(&path.with_extension("md"), text.as_bytes())?;
        eprintln!("written to {} (and .md)", path.display());
    }
    Ok(())
}

/// The file name without its extension (`.nii.gz` counts as one).
fn stem_of(path: &Path) -> Result<&std::ffi::OsStr> {
    let stem = path
        .file_stem()
        .with_context(|| format!("{} has no file name", path.display()))?;
    Ok(match stem.to_str().and_then(|s| s.strip_suffix(".nii")) {
        Some(inner) => std::ffi::OsStr::new(inner),
        None => stem,
    })
}

/// Writes then renames, so a half-written stream never exists under its name.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("orc.tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, path))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// A progress bar on a terminal; hidden otherwise (logs and pipes get the per-image lines).
fn progress_bar(len: u64, what: &str) -> indicatif::ProgressBar {
    if len < 2 || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} {bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}]",
        )
        .expect("a valid template"),
    );
    bar.set_message(what.to_string());
    bar
}

impl RemoteArgs {
    fn connect(&self) -> Result<(EdgeModel, String, ureq::Agent)> {
        let m = load_model(&self.model)?;
        let token = read_token(&self.token_file)?;
        let agent = client::agent(self.ca_cert.as_deref(), Duration::from_secs(self.timeout_s))?;
        Ok((m, token, agent))
    }
}

fn read_token(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read token file {}", path.display()))?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .with_context(|| format!("{} holds no token", path.display()))
}

fn segment_remote(remote: &RemoteArgs, image: &Path, out: &Path) -> Result<()> {
    let (m, token, agent) = remote.connect()?;
    let server = remote.server.as_str();
    if is_scan(image) {
        return segment_scan_remote(&m, &agent, server, &token, image, out);
    }
    let (stream, encode_time) = encode_one(&m, image)?;
    let answer = client::segment_remote(&agent, server, &token, &stream)?;
    write_atomically(out, &answer.body)?;
    println!("{}: label map from {server}", out.display());
    println!(
        "  sent {} bytes ({:.5} bpp)",
        stream.len(),
        8.0 * stream.len() as f64 / m.pixels() as f64
    );
    print_timings(encode_time, &answer, "decode + g + s + PNG");
    Ok(())
}

/// A scan (NIfTI file or DICOM series folder) to its label volume: coded here, segmented by the
/// service, written as gzipped NIfTI on the scan's own voxels and affine. The answer is checked
/// against the scan (sides and affine) before it is written.
fn segment_scan_remote(
    m: &EdgeModel,
    agent: &ureq::Agent,
    server: &str,
    token: &str,
    scan_path: &Path,
    out: &Path,
) -> Result<()> {
    let name = out.to_string_lossy();
    if !(name.ends_with(".nii.gz") || name.ends_with(".nii")) {
        bail!(
            "{}: a label volume is written as NIfTI: name the output .nii.gz",
            out.display()
        );
    }
    let scan = read_scan(scan_path, DEFAULT_MAX_VOXELS)?;
    let geometry = scan.geometry.clone();
    let started = Instant::now();
    let sent = m.encode_volume(scan)?;
    let encode_time = started.elapsed();
    let answer = client::segment_remote_as(agent, server, token, &sent.bytes, "application/gzip")?;
    // Read back through the same reader as any NIfTI file (bounded, checked), from a file
    // beside the output that becomes the output only once it is known to fit the scan.
    let partial = out.with_file_name(format!(
        ".{}.partial.nii.gz",
        out.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
    ));
    std::fs::write(&partial, &answer.body).with_context(|| format!("cannot write {}", partial.display()))?;
    let checked = read_labels(&partial, DEFAULT_MAX_VOXELS)
        .with_context(|| format!("the service's answer for {}", scan_path.display()))
        .and_then(|labels| {
            if labels.geometry.sides != geometry.sides {
                bail!(
                    "the service answered a label volume of sides {:?} for a scan of sides {:?}",
                    labels.geometry.sides,
                    geometry.sides
                );
            }
            Ok(labels)
        });
    let _ = std::fs::remove_file(&partial);
    let labels = checked?;
    // On the scan's own affine (a DICOM series' included), whatever the answer's header says.
    let volume = LabelVolume {
        geometry: geometry.clone(),
        labels: labels.labels,
    };
    write_labels(out, &volume).with_context(|| format!("cannot write {}", out.display()))?;
    let [d, h, w] = geometry.sides;
    println!("{}: label volume {d} x {h} x {w} from {server}", out.display());
    println!(
        "  sent {} bytes ({} geometry + {} code, {:.5} bpp)",
        sent.bytes.len(),
        sent.bytes.len() - sent.code_bytes,
        sent.code_bytes,
        8.0 * sent.bytes.len() as f64 / sent.voxels as f64
    );
    print_timings(encode_time, &answer, "decode + g + s + NIfTI");
    Ok(())
}

fn print_timings(encode_time: Duration, answer: &client::Remote, service: &str) {
    let round_trip = answer.round_trip.as_secs_f64() * 1e3;
    println!(
        "  encode (C + entropy coding) {:.2} ms",
        encode_time.as_secs_f64() * 1e3
    );
    match answer.server_ms {
        Some(s) => println!(
            "  service ({service}) {s:.2} ms, network and TLS {:.2} ms, round trip {round_trip:.2} ms",
            round_trip - s
        ),
        None => println!("  round trip {round_trip:.2} ms"),
    }
}

/// Image files given directly, and the PNG and JPEG files of folders given, sorted.
fn image_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("cannot read folder {}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension()
                        .and_then(|e| e.to_str())
                        .is_some_and(|e| ["png", "jpg", "jpeg"].contains(&e.to_ascii_lowercase().as_str()))
                })
                .collect();
            found.sort();
            if found.is_empty() {
                bail!("{} holds no PNG or JPEG images", path.display());
            }
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

fn load_test(remote: &RemoteArgs, images: &[PathBuf], requests: usize, concurrency: usize) -> Result<()> {
    let (m, token, agent) = remote.connect()?;
    let streams = image_files(images)?
        .iter()
        .map(|p| encode_one(&m, p).map(|(s, _)| s))
        .collect::<Result<Vec<_>>>()?;
    let report = client::load_test(&agent, &remote.server, &token, &streams, requests, concurrency);
    println!(
        "{} requests, {} at a time: {:.1} requests/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {} failed",
        report.requests,
        report.concurrency,
        report.requests_per_second,
        report.p50_ms,
        report.p99_ms,
        report.max_ms,
        report.failed
    );
    println!("{}", serde_json::to_string(&report)?);
    if report.failed > 0 {
        bail!(
            "{} requests failed; the first: {}",
            report.failed,
            report.first_error.as_deref().unwrap_or("?")
        );
    }
    Ok(())
}
