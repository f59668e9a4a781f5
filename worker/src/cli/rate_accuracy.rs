//! `orchestra-worker rate-accuracy`: rate against accuracy on the held-out split, the codecs
//! (segmented by a D1 model) beside the learned models on their real bitstreams. Images here;
//! volume models go to `volume::rate_accuracy`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use orchestra_api::Variant;
use orchestra_worker::data::Dataset;

use super::trial::{load_checkpoint, read_spec};

/// Rate against accuracy on the held-out split: JPEG over its quality knob (segmented by a
/// D1 model) beside learned models on their real bitstreams; a table and a plot. For volume
/// models: JPEG-2000 per slice and H.264 over the slices (inter) on whole held-out volumes.
#[derive(clap::Args)]
pub struct RateAccuracyArgs {
    /// Trial spec of the D1 model that segments the baselines' decoded images.
    #[arg(long)]
    pub d1: PathBuf,
    /// Trial specs of learned compressing models (D2-D4).
    #[arg(long, num_args = 1..)]
    pub models: Vec<PathBuf>,
    /// JPEG qualities.
    #[arg(long, value_delimiter = ',', default_value = "2,5,10,20,40,70,90")]
    pub qualities: Vec<u8>,
    /// JPEG-2000 target rates (bits per pixel).
    #[arg(long, value_delimiter = ',', default_value = "0.05,0.1,0.15,0.25,0.4,0.8,1.5")]
    pub j2k_rates: Vec<f64>,
    /// H.264 intra quantisers (0-51).
    #[arg(long, value_delimiter = ',', default_value = "51,46,42,38,34,30,24")]
    pub h264_qps: Vec<u8>,
    /// Train the Auto/Seg baseline (an autoencoder with C's code, pixel MSE) for this many
    /// steps on the training split (0: leave it out).
    #[arg(long, default_value_t = 0)]
    pub autoseg_steps: u64,
    /// Output folder for rate-accuracy.{md,json,svg,png}.
    #[arg(long, default_value = "rate-accuracy")]
    pub out: PathBuf,
}

pub fn run(args: RateAccuracyArgs) -> Result<()> {
    let RateAccuracyArgs {
        d1,
        models,
        qualities,
        j2k_rates,
        h264_qps,
        autoseg_steps,
        out,
    } = args;
    use orchestra_worker::baselines::rate_accuracy::{self, CodecSetting};
    let d1_spec = read_spec(&d1)?;
    if d1_spec.variant != Variant::D1 {
        bail!("--d1 {}: variant {}, expected D1", d1.display(), d1_spec.variant);
    }
    if d1_spec.model.dims == 3 {
        let specs = models.iter().map(|m| read_spec(m)).collect::<Result<Vec<_>>>()?;
        return super::volume::rate_accuracy(&d1_spec, &specs, &j2k_rates, &h264_qps, &out);
    }
    let (d1_model, _, _) = load_checkpoint(&d1_spec, None)?;
    let data = Dataset::open(&d1_spec.dataset, d1_spec.model.input_size)?;
    let settings: Vec<CodecSetting> = qualities
        .iter()
        .map(|q| CodecSetting::Jpeg(*q))
        .chain(j2k_rates.iter().map(|b| CodecSetting::Jpeg2000(*b)))
        .chain(h264_qps.iter().map(|q| CodecSetting::H264(*q)))
        .collect();
    eprintln!(
        "rate-accuracy: {} codec settings on {} held-out images",
        settings.len(),
        data.val.len()
    );
    let mut baselines = rate_accuracy::codec_curve(&d1_model, &data.val, data.channels, data.size, &settings)
        .map_err(anyhow::Error::msg)?;
    if autoseg_steps > 0 {
        use orchestra_worker::baselines::autoseg::{autoseg_point, AutoEncoder};
        // The code of the learned models (their preset and overrides), else D1's preset.
        let code_model = match models.first() {
            Some(path) => read_spec(path)?.model,
            None => d1_spec.model.clone(),
        };
        let config = orchestra_worker::nets::config::resolve(&code_model, data.channels, data.classes);
        let ae = AutoEncoder::new(&config, d1_model.vs.device(), d1_spec.seed);
        eprintln!(
            "rate-accuracy: training Auto/Seg for {autoseg_steps} steps ({} code bits)",
            config.code_bits()
        );
        let batch = d1_spec.hyper.batch_size as usize;
        let (first, last) = ae.train(&data.train, autoseg_steps, batch, 1e-3, d1_spec.seed);
        eprintln!("rate-accuracy: Auto/Seg pixel MSE {first:.5} -> {last:.5}");
        baselines.push(autoseg_point(&d1_model, &ae, &data.val));
    }
    let mut learned = Vec::new();
    for path in &models {
        let spec = read_spec(path)?;
        if spec.dataset != d1_spec.dataset || spec.model.input_size != d1_spec.model.input_size {
            bail!(
                "{}: dataset or input size differs from the D1 model's",
                path.display()
            );
        }
        let (model, _, _) = load_checkpoint(&spec, None)?;
        let point = rate_accuracy::learned_point(&spec.trial, &model, &data.val, data.channels, data.size)
            .map_err(anyhow::Error::msg)?;
        learned.push((point, spec.variant));
    }
    let mut all: Vec<_> = baselines.clone();
    all.extend(learned.iter().map(|(p, _)| p.clone()));
    let table = rate_accuracy::table(&all);
    print!("{table}");
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    std::fs::write(out.join("rate-accuracy.md"), &table)?;
    std::fs::write(out.join("rate-accuracy.json"), serde_json::to_vec_pretty(&all)?)?;
    let report = rate_accuracy::report("held-out images", &learned, &baselines);
    let (svg, png) = orchestra_report::figure::write_figure(&report, &out.join("rate-accuracy"))
        .map_err(anyhow::Error::msg)?;
    println!("plot: {} and {}", png.display(), svg.display());
    Ok(())
}
