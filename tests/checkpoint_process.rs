//! Resuming in a fresh process: the parent runs k steps and saves a checkpoint; a child process (this same
//! test binary, re-executed with `WGOPTIM_CHECKPOINT_CHILD` set) builds a fresh arena and optimizer on the
//! same adapter, restores the checkpoint, runs the remaining steps and saves its final state; the parent
//! compares that with the uninterrupted run, bit for bit. For AdamW, 8-bit AdamW, and AdamW under a
//! one-cycle schedule that cycles β1.

#[allow(dead_code)]
#[path = "gpu/checkpoint.rs"]
mod checkpoint;
#[allow(dead_code)]
#[path = "gpu/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "gpu/util.rs"]
mod util;

use std::process::Command;

use harness::test;
use util::{err, model, small_model, write_grads};
use wgoptim::schedule::{OneCycle, OneCycleConfig};
use wgoptim::{Checkpoint, Gpu, GpuOptions, Optimizer, ParamArena};

const K: u64 = 4;
const N: u64 = 9;
const CHILD: &str = "WGOPTIM_CHECKPOINT_CHILD";

fn main() {
    if let Ok(spec) = std::env::var(CHILD) {
        match child(&spec) {
            Ok(()) => std::process::exit(0),
            Err(e) => {
                eprintln!("child: {e}");
                std::process::exit(1);
            }
        }
    }
    harness::run(vec![
        test("checkpoint_fresh_process_adamw", |g| parent(g, "adamw")),
        test("checkpoint_fresh_process_adamw8bit", |g| {
            parent(g, "adamw8bit")
        }),
        test("checkpoint_fresh_process_schedule", |g| {
            parent(g, "schedule")
        }),
    ]);
}

fn arena(gpu: &Gpu) -> Result<ParamArena, String> {
    model(gpu, &small_model(), Some(16 * 1024))
}

fn schedule() -> Result<OneCycle, String> {
    OneCycle::new(&OneCycleConfig {
        max_lr: 1e-2,
        total_steps: N,
        ..OneCycleConfig::default()
    })
    .map_err(err)
}

/// The optimizer of `case` (`schedule` steps AdamW with the one-cycle schedule).
fn optimizer(arena: &ParamArena, case: &str, groups: bool) -> Result<Box<dyn Optimizer>, String> {
    let name = if case == "schedule" { "adamw" } else { case };
    checkpoint::build(arena, name, groups)
}

/// Steps `from + 1 ..= to`.
fn steps(
    arena: &ParamArena,
    opt: &mut dyn Optimizer,
    sched: Option<&mut OneCycle>,
    from: u64,
    to: u64,
) -> Result<(), String> {
    let mut sched = sched;
    for s in from + 1..=to {
        write_grads(arena, s)?;
        match sched.as_deref_mut() {
            Some(sc) => opt.step_scheduled(arena, sc).map(|_| ()),
            None => opt.step(arena, 1e-3 * (1.0 + s as f64 * 0.1)).map(|_| ()),
        }
        .map_err(err)?;
    }
    Ok(())
}

/// The child's side: `case;backend;adapter name;input;output`.
fn child(spec: &str) -> Result<(), String> {
    let parts: Vec<&str> = spec.splitn(5, ';').collect();
    let [case, backend, adapter, input, output] = parts[..] else {
        return Err(format!("bad spec `{spec}`"));
    };
    let gpu = Gpu::open_all(&GpuOptions::default())
        .into_iter()
        .flatten()
        .find(|g| format!("{:?}", g.info().backend) == backend && g.info().name == adapter)
        .ok_or_else(|| format!("adapter {backend} `{adapter}` not found"))?;
    let arena = arena(&gpu)?;
    let mut opt = optimizer(&arena, case, false)?;
    let ckpt = Checkpoint::load(input).map_err(err)?;
    ckpt.restore(&arena, opt.as_mut()).map_err(err)?;
    let mut sched = schedule()?;
    let sched = if case == "schedule" {
        ckpt.restore_schedule(&mut sched).map_err(err)?;
        Some(&mut sched)
    } else {
        None
    };
    steps(&arena, opt.as_mut(), sched, K, N)?;
    Checkpoint::capture(&arena, opt.as_ref())
        .map_err(err)?
        .save(output)
        .map_err(err)
}

fn parent(gpu: &Gpu, case: &str) -> Result<(), String> {
    let with_schedule = case == "schedule";
    let straight_arena = arena(gpu)?;
    let mut straight = optimizer(&straight_arena, case, true)?;
    let mut sched = schedule()?;
    steps(
        &straight_arena,
        straight.as_mut(),
        with_schedule.then_some(&mut sched),
        0,
        N,
    )?;
    let want = Checkpoint::capture(&straight_arena, straight.as_ref()).map_err(err)?;

    let first_arena = arena(gpu)?;
    let mut first = optimizer(&first_arena, case, true)?;
    let mut sched = schedule()?;
    steps(
        &first_arena,
        first.as_mut(),
        with_schedule.then_some(&mut sched),
        0,
        K,
    )?;
    let input = checkpoint::temp_path(gpu, &format!("process_{case}_in"));
    let output = checkpoint::temp_path(gpu, &format!("process_{case}_out"));
    let mut ckpt = Checkpoint::capture(&first_arena, first.as_ref()).map_err(err)?;
    if with_schedule {
        ckpt = ckpt.with_schedule(&sched);
    }
    ckpt.save(&input).map_err(err)?;

    let exe = std::env::current_exe().map_err(err)?;
    let spec = format!(
        "{case};{:?};{};{};{}",
        gpu.info().backend,
        gpu.info().name,
        input.display(),
        output.display()
    );
    let status = Command::new(exe).env(CHILD, spec).output().map_err(err);
    let _ = std::fs::remove_file(&input);
    let status = status?;
    if !status.status.success() {
        let _ = std::fs::remove_file(&output);
        return Err(format!(
            "the child process failed: {}",
            String::from_utf8_lossy(&status.stderr)
        ));
    }
    let got = Checkpoint::load(&output).map_err(err);
    let _ = std::fs::remove_file(&output);
    checkpoint::same_checkpoint(case, &got?, &want)
}
