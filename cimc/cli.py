"""The ``cimc`` command line: thin wrappers over the library. Errors print one line, no traceback."""

from __future__ import annotations

import functools
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import click

from cimc.errors import CimcError


class _Group(click.Group):
    """Turns every CimcError into a one-message exit (status 1) instead of a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except CimcError as e:
            raise click.ClickException(str(e)) from None


def _instrument_options(fn):
    @click.option("--print-after-all", is_flag=True, help="Print the IR after every pass (stderr).")
    @click.option("--print-after", "print_after", default=None, metavar="NAMES",
                  help="Print the IR after these passes, comma-separated (stderr).")
    @click.option("--time-passes", is_flag=True, help="Print the time each pass took (stderr).")
    @click.option("--dump-dir", type=click.Path(file_okay=False), default=None,
                  help="Write DIR/NNN_<pass>.cir (parseable) after every pass.")
    @functools.wraps(fn)
    def wrapper(*args, print_after_all, print_after, time_passes, dump_dir, **kwargs):
        from cimc.passes.base import DumpDir, PrintAfter, TimePasses

        instruments = []
        if print_after_all:
            instruments.append(PrintAfter(None, sys.stderr))
        elif print_after:
            instruments.append(PrintAfter({n.strip() for n in print_after.split(",")}, sys.stderr))
        if dump_dir:
            instruments.append(DumpDir(Path(dump_dir), force=kwargs.get("force", False)))
        if time_passes:
            instruments.append(TimePasses(sys.stderr))
        return fn(*args, instruments=instruments, **kwargs)

    return wrapper


def _parse_input_shapes(items: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    from cimc.frontend.onnx.importer import parse_shape

    out = {}
    for item in items:
        name, eq, shape = item.rpartition("=")
        if not eq or not name:
            raise CimcError(f"--input-shape {item!r}: expected NAME=DIMS, e.g. input=1x3x224x224")
        out[name] = parse_shape(shape)
    return out


_force_option = click.option(
    "--force", is_flag=True,
    help="Replace an existing output (file or directory) that cimc did not write.")
_seed_type = click.IntRange(min=0)

_input_shape_option = click.option(
    "--input-shape", "input_shapes", multiple=True, metavar="NAME=DIMS",
    help="Fix an input's shape, e.g. input=1x3x224x224 (needed for dynamic dimensions).",
)


_key_option = click.option(
    "--key", type=click.Path(dir_okay=False), default=None,
    help="The key of an encrypted artifact (NAME.cimc.key); without it the chip runs the "
         "scrambled weights.")

_prune_option = click.option(
    "--prune", default=None, metavar="OPTIONS",
    help='Prune near-duplicate filters first (prune-similar), e.g. "ratio=0.3" or '
         '"metric=hamming,c=0.15,b=0.146".',
)


_ode_option = click.option(
    "--ode", default=None, metavar="OPTIONS",
    help='Compile the model as the vector field f of dx/dt = f(x, t), solved on the chip from '
         'the input state (docs/ode.md): "t1=1.0[,t0=0,rtol=1e-3,atol=1e-6,solver=heun-euler|'
         'bosh3|euler|rk4,step=drift|digital|fixed:N,h0=H,max_steps=N,steady=THR]".',
)


def _read_inputs(items: tuple[str, ...]) -> tuple[dict[str, Any], list[str]]:
    """``--input NAME=FILE.npy`` options as arrays by name, and the files read."""
    import numpy as np

    feeds, files = {}, []
    for item in items:
        name, eq, path = item.partition("=")
        if not eq:
            raise CimcError(f"--input {item!r}: expected NAME=FILE.npy")
        if not Path(path).is_file():
            raise CimcError(f"--input {name}: file {path} not found")
        try:
            feeds[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise CimcError(f"--input {name}: cannot read {path} as .npy ({e})") from None
        files.append(path)
    return feeds, files


def _format_stats(stats: dict[str, Any]) -> str:
    """``chip.last_stats`` (an ODE solve's) as one line."""
    return (f"ode: {stats['steps']} steps, {stats['rejected']} rejected, {stats['f_evals']} "
            f"f-evaluations, t_end {stats['t_end']:g}, {stats['cell_writes']} cell writes (at "
            f"most {stats['max_writes_per_row']} per row), latency "
            f"{stats['latency_ns'] * 1e-6:.4g} ms, energy {stats['energy_nj'] * 1e-3:.4g} µJ")


@click.group(cls=_Group)
@click.version_option(package_name="cimc")
def main() -> None:
    """cimc: compile ONNX models for analog compute-in-memory chips and run them on a simulated chip."""
    # Warnings from the library (e.g. "no calibration data") print as one plain line on stderr,
    # for this command only (main() may run inside another program, e.g. the tests).
    before = warnings.showwarning
    warnings.showwarning = lambda message, *args, **kwargs: click.echo(f"warning: {message}",
                                                                       err=True)
    click.get_current_context().call_on_close(lambda: setattr(warnings, "showwarning", before))


@main.command("import")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Output .cir file.")
@_input_shape_option
@_force_option
def import_cmd(model: str, output: str, input_shapes: tuple[str, ...], force: bool) -> None:
    """Import an ONNX MODEL into textual IR (OUT.cir, with OUT.npz for large constants)."""
    from cimc.frontend.onnx import import_onnx
    from cimc.ir.printer import check_ir_output, write_module

    check_ir_output(output, force=force, inputs=[model])
    module = import_onnx(model, _parse_input_shapes(input_shapes))
    write_module(module, output, force=force)
    click.echo(f"wrote {output}", err=True)


@main.command("opt")
@click.argument("source", type=click.Path(dir_okay=False))
@click.option("-p", "--passes", "spec", required=True, help='Pass pipeline, e.g. "canonicalize,dce".')
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Output .cir file (default: print to stdout).")
@click.option("--target", default=None, help="Target profile or .toml (for mapping passes).")
@click.option("--calib", type=click.Path(dir_okay=False), default=None,
              help="Calibration inputs (.npz; see compile --calib).")
@_force_option
@_instrument_options
def opt_cmd(source, spec, output, target, calib, force, instruments) -> None:
    """Run a pass pipeline on an IR file."""
    from cimc.compiler import resolve_target
    from cimc.data import input_arrays, load_npz
    from cimc.ir.parser import read_module
    from cimc.ir.printer import check_ir_output, to_text, write_module
    from cimc.ir.verify import verify
    from cimc.passes.base import PassContext
    from cimc.passes.registry import run_pipeline

    if output:
        check_ir_output(output, force=force, inputs=[source])
    module = read_module(source)
    verify(module)
    arrays = input_arrays(load_npz(calib, "calibration data"), module.main.input_names,
                          calib) if calib else None
    ctx = PassContext(target=resolve_target(target), calib=arrays)
    run_pipeline(module, spec, ctx, instruments)
    if output:
        write_module(module, output, force=force)
    else:
        click.echo(to_text(module), nl=False)


@main.command("passes")
def passes_cmd() -> None:
    """List the available passes."""
    from cimc.passes.registry import PASSES

    width = max(len(p.name) for p in PASSES)
    for p in PASSES:
        opts = ", ".join(f"{n}={f.default!r}" for n, f in p.option_fields().items())
        click.echo(f"{p.name:<{width}}  {p.summary()}" + (f"  [{opts}]" if opts else ""))


@main.command("targets")
def targets_cmd() -> None:
    """List the bundled chip targets."""
    from cimc.targets import list_targets, load_target

    for name in list_targets():
        t = load_target(name)
        click.echo(f"{name:<10}  {t.description}")


@main.command("compile")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--target", default="ideal", show_default=True, help="Target profile name or path to a .toml.")
@click.option("-o", "--output", type=click.Path(), default=None,
              help="Artifact directory (default: MODEL.cimc next to the model).")
@_input_shape_option
@click.option("--calib", type=click.Path(dir_okay=False), default=None,
              help="Calibration inputs for DAC/ADC ranges (.npz): the array named after the "
              "input, or the only array besides the labels (y, labels); one array per input name "
              "for several inputs.")
@click.option("--chips", default="auto", show_default=True,
              help="'auto' spreads the model over as many chips as it needs; N refuses more than N.")
@click.option("--print-pipeline", is_flag=True, help="Print the pass pipeline as a spec string and exit.")
@_force_option
@_prune_option
@click.option("--encrypt", default=None, metavar="OPTIONS",
              help='Encrypt weight signs (the encrypt pass\'s options, e.g. "epsilon=64"; "" for '
                   "its defaults); writes the key to OUT.cimc.key.")
@click.option("--encrypt-data", type=click.Path(dir_okay=False), default=None,
              help="Samples for --encrypt (.npz): inputs as --calib, labels as y or labels "
                   "(without labels: agreement with the unencrypted model).")
@_ode_option
@click.option("--replicate", type=click.Choice(["auto", "none"]), default="auto",
              show_default=True, help="Copy the layers that bound the latency onto the spare "
              "crossbars of the chips used (the copies split the positions), or not.")
@_instrument_options
def compile_cmd(model, target, output, input_shapes, calib, chips, print_pipeline, force, prune,
                encrypt, encrypt_data, ode, replicate, instruments) -> None:
    """Compile an ONNX MODEL for a chip target into an artifact."""
    from cimc.compiler import compile as compile_model
    from cimc.passes.base import pipeline_spec
    from cimc.passes.pipelines import compile_pipeline

    n_chips = _parse_chips(chips)
    if print_pipeline:
        click.echo(pipeline_spec(compile_pipeline(chips=n_chips, prune=prune, encrypt=encrypt,
                                                  ode=ode is not None,
                                                  replicate=replicate)))
        return
    if encrypt_data and encrypt is None:
        raise CimcError("--encrypt-data is the data for --encrypt OPTIONS; give both")
    out = Path(output) if output else Path(model).with_suffix(".cimc")
    result = compile_model(
        model, target, out, input_shapes=_parse_input_shapes(input_shapes), calib=calib,
        chips=n_chips, instruments=instruments, force=force, prune=prune, encrypt=encrypt,
        encrypt_data=encrypt_data, ode=ode, replicate=replicate,
    )
    click.echo(f"wrote {result.artifact}", err=True)
    if result.key:
        click.echo(f"wrote {result.key} (the key: {result.encryption.bits} sign bits "
                   "flipped; keep it apart from the artifact)", err=True)


def _parse_chips(text: str) -> int:
    if text == "auto":
        return 0
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 1:
        raise CimcError(f"--chips {text!r}: expected 'auto' or a positive integer")
    return n


@main.command("run")
@click.argument("artifact", type=click.Path())
@click.option("--input", "inputs", multiple=True, metavar="NAME=FILE.npy", required=True,
              help="An input array (.npy); repeat for each input.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Outputs (.npz).")
@click.option("--time", "t", default=0.0, show_default=True, type=float,
              help="Seconds since the chip was programmed (drift).")
@click.option("--seed", default=0, show_default=True, type=_seed_type, help="Chip instance seed.")
@_force_option
@_key_option
def run_cmd(artifact, inputs, output, t, seed, force, key) -> None:
    """Run a compiled ARTIFACT on a simulated chip instance (an ODE solve prints its
    statistics)."""
    import numpy as np

    from cimc.atomic import atomic_path, check_output
    from cimc.data import npz_names
    from cimc.progress import postfix, progress
    from cimc.runtime import load

    feeds, files = _read_inputs(inputs)
    with progress(3, "run") as bar:
        bar.set_postfix_str("reading the artifact")
        chip = load(artifact, seed=seed, key=key, progress=postfix(bar, "reading the artifact"))
        names = {o.name for o in chip.artifact.outputs}
        check_output(output, "the outputs of a run", force=force,
                     inputs=[artifact, *files, *([key] if key else [])],
                     ours=lambda p: npz_names(p) == names)
        bar.update()
        running = f"running {max((len(a) for a in feeds.values() if a.ndim), default=1)} samples"
        bar.set_postfix_str(running)
        chip.progress = postfix(bar, running)  # the crossbars are programmed as the run starts
        outs = chip.run(feeds, t=t)
        bar.update()
        bar.set_postfix_str("writing")
        with atomic_path(output) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **outs)
        bar.update()
    if chip.last_stats is not None:
        click.echo(_format_stats(chip.last_stats))
    click.echo(f"wrote {output}", err=True)


@main.command("report")
@click.argument("artifact", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--input", "inputs", multiple=True, metavar="NAME=FILE.npy",
              help="Run these inputs first and report that run (programs that loop, such as "
              "ODE solves, need it: their work depends on the inputs).")
@click.option("--time", "t", default=0.0, show_default=True, type=float,
              help="Seconds since programming, for the run of --input.")
@click.option("--seed", default=0, show_default=True, type=_seed_type, help="Chip instance seed.")
@_key_option
def report_cmd(artifact, as_json, inputs, t, seed, key) -> None:
    """Report crossbars, cores, utilisation, latency, energy and area of an ARTIFACT (an ODE
    solve: its time per iteration and the step controller's area)."""
    from cimc.runtime import load

    chip = load(artifact, seed=seed, key=key)
    if inputs:
        chip.run(_read_inputs(inputs)[0], t=t)
    report = chip.report()
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(str(report))


@main.command("evaluate")
@click.argument("model", type=click.Path())
@click.option("--data", required=True, type=click.Path(dir_okay=False),
              help="Labelled data (.npz): labels as y or labels, inputs as the array named after "
              "the model's input or the only other array.")
@click.option("--target", default="pcm40", show_default=True, help="Target profile name or .toml.")
@click.option("--time", "times", multiple=True, type=float, default=(0.0,), show_default=True,
              help="Seconds since programming; repeat for several drift times.")
@click.option("--seed", "seeds", multiple=True, type=_seed_type, default=(0,), show_default=True,
              help="Chip instance seed; repeat to average over instances.")
@click.option("--calib-count", default=100, show_default=True,
              help="Leading samples used to calibrate the converters (left out of the scores).")
@_prune_option
@_key_option
def evaluate_cmd(model, data, target, times, seeds, calib_count, prune, key) -> None:
    """Top-1 accuracy of MODEL on a simulated chip beside onnxruntime's (MODEL may also be a
    compiled artifact, scored on its own target; --key for an encrypted one)."""
    from cimc.evaluate import evaluate_accuracy

    click.echo(str(evaluate_accuracy(model, data, target, times, seeds, calib_count,
                                     prune=prune, key=key)))


@main.command("sweep")
@click.argument("model", type=click.Path())
@click.option("--data", required=True, type=click.Path(dir_okay=False),
              help="Labelled data (.npz), as evaluate's; every sample is scored.")
@click.option("--target", default=None,
              help="Target profile or .toml (needed for an ONNX model; an artifact has its own).")
@click.option("--seeds", default="0:64", show_default=True,
              help="Chip instance seeds: N, A:B (B excluded), comma-separated.")
@click.option("--time", "times", default="0,3600,86400,2.6e6,3.15e7", show_default=True,
              help="Seconds since programming, comma-separated.")
@click.option("--no-compensation", is_flag=True, help="Turn global drift compensation off.")
@click.option("--workers", type=int, default=None,
              help="Local worker processes (default: this machine's CPUs).")
@click.option("--scheduler", default=None, metavar="tcp://HOST:PORT",
              help="Run on the Dask cluster of this scheduler instead of local workers.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Results (.json), rewritten as each instance finishes.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Also draw accuracy bands against time (.png, .pdf, .svg; needs matplotlib).")
@click.option("--resume", is_flag=True, help="Continue the sweep already in the output file.")
@_force_option
@_input_shape_option
@click.option("--calib", type=click.Path(dir_okay=False), default=None,
              help="Calibration inputs (.npz) for compiling an ONNX model, as compile.")
@click.option("--chips", default="auto", show_default=True, help="As compile (ONNX model only).")
def sweep_cmd(model, data, target, seeds, times, no_compensation, workers, scheduler, output,
              plot, resume, force, input_shapes, calib, chips) -> None:
    """Accuracy of many chip instances (seeds) at several drift times, on Dask."""
    from cimc.montecarlo import check_plot, parse_seeds, parse_times, plot_sweep, sweep

    seed_list, time_list = parse_seeds(seeds), parse_times(times)
    if plot:
        check_plot(plot, force, inputs=[model, data, output])
    result = sweep(model, data, target, seed_list, time_list,
                   drift_compensation=False if no_compensation else None,
                   input_shapes=_parse_input_shapes(input_shapes), calib=calib,
                   chips=_parse_chips(chips), workers=workers, scheduler=scheduler,
                   output=output, resume=resume, force=force)
    click.echo(str(result))
    click.echo(f"wrote {output}", err=True)
    if plot and result.by_seed:
        plot_sweep(result, plot, force)
        click.echo(f"wrote {plot}", err=True)
    if result.failed:
        raise CimcError(f"{len(result.failed)} of {len(result.seeds)} chip instances failed "
                        f"(seeds {', '.join(map(str, sorted(result.failed)))}; errors above and "
                        f"in {output}); --resume runs them again")


if __name__ == "__main__":  # pragma: no cover
    main()
