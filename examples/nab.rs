//! Runs a detector over NAB and prints its scores, the same as
//! `closedloop nab --data DIR --labels FILE --detector NAME [--param k=v ...] [--out DIR]`;
//! `--results DIR` scores existing NAB results files of detector NAME instead.

use std::path::PathBuf;

use closedloop::anomaly::nab::{run_nab, NabArgs};

fn main() {
    let mut args = NabArgs::default();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().unwrap_or_default();
        match a.as_str() {
            "--data" => args.data_dir = PathBuf::from(val()),
            "--labels" => args.labels_file = PathBuf::from(val()),
            "--detector" => args.detector = val(),
            "--out" => args.output_dir = Some(PathBuf::from(val())),
            "--results" => args.results_dir = Some(PathBuf::from(val())),
            "--param" => {
                let kv = val();
                match kv.split_once('=') {
                    Some((k, v)) => args.params.push((k.to_string(), v.to_string())),
                    None => {
                        eprintln!("--param expects key=value, got {kv:?}");
                        std::process::exit(2);
                    }
                }
            }
            other => {
                eprintln!("unknown argument {other:?}");
                std::process::exit(2);
            }
        }
    }
    if let Err(e) = run_nab(&args, &mut std::io::stdout()) {
        eprintln!("nab: {e}");
        std::process::exit(1);
    }
}
