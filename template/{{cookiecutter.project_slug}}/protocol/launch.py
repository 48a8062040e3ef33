"""Run protocol, rarely edited: skip, resume or start a run, and record how it ended.

``launch`` is called by every ``train.py``. It finds the run's directory,
decides what to do from the flag present (finished: skip; interrupted or
killed: resume; failed: skip until ``--retry_failed``), takes the lock, calls
the task's ``train(run)`` and leaves exactly one flag behind, whatever happens.
Under torchrun, rank 0 decides and keeps the books; every rank follows.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from protocol.cluster import (
    cancel_srun_step,
    install_stop_handlers,
    is_rank_zero,
    requeue_if_slurm,
    restore_handlers,
    signal_exit_code,
)
from protocol.errors import CheckpointUnusable, OtherWorldSize, RunDiverged, RunInterrupted, RunPruned
from protocol.files import describe_os_error, one_line, read_json, write_json
from protocol.lock import acquire_lock, claiming, live_owner, release_lock, start_heartbeat
from protocol.manifest import update_manifest
from protocol.naming import hyperparameter_defaults, run_name
from protocol.ranks import Lost, end, join, lost_ranks, start_beating
from protocol.rundir import (
    Run,
    archive,
    clear_flags,
    config_differences,
    flag_state,
    progress_summary,
    write_flag,
)

EXIT_FAILED = 1
EXIT_LOCKED = 3
EXIT_CONFLICT = 4

Train = Callable[[Run], dict[str, float]]
EXPECTED = (RunInterrupted, RunPruned, RunDiverged, CheckpointUnusable, KeyboardInterrupt)  # not a rank gone


def launch(
    task_dir: Path, args: argparse.Namespace, hyperparameters: argparse.ArgumentParser, train: Train
) -> int:
    """Run ``train`` under the protocol and return the process exit code.

    0: finished or pruned, or skipped because it had finished, been pruned or failed before;
    1: failed; 3: another live process owns the run; 4: the run directory holds a run
    trained with other hyperparameters, or a checkpoint of another number of processes;
    128+N: stopped by signal N.
    ``hyperparameters`` is train.py's parser of the options that define the run:
    each names its directory, goes into ``hparams.json`` and must match on a relaunch.
    """
    defaults = hyperparameter_defaults(hyperparameters)
    name = run_name(args, defaults)
    run = Run(
        task=task_dir.name,
        name=name,
        dir=args.results_dir / name,
        args=args,
        hparams={key: getattr(args, key) for key in defaults},
        ranks=join(),  # under srun or torchrun: every rank's host, for the lock, manifest and failures
    )
    try:
        decision = claim(run) if is_rank_zero() else None
    except OSError as error:  # results/ read-only, a file where a directory should be, a full disk
        print(f"[{run.name}] cannot set up {run.dir}: {describe_os_error(error)}", file=sys.stderr)
        decision = EXIT_FAILED
    decision = share_from_rank_zero(decision)
    if decision is None:  # a process Lightning started itself, after rank 0 claimed the run
        decision = "resume" if has_checkpoint(run) else "start"
    if isinstance(decision, int):
        return decision
    run.resuming = decision == "resume"
    previous_handlers = install_stop_handlers(run.request_stop)
    if run.ranks:  # how the others tell this rank is gone, and how it watches them
        start_beating(run.dir, run.ranks, lambda gone: _give_up(run, gone))
    if not is_rank_zero():
        try:
            return _train_on_other_rank(run, train)
        finally:
            restore_handlers(previous_handlers)
    stop_heartbeat = start_heartbeat(run.dir)  # tells other hosts this run is alive
    try:
        return _train_and_record(run, train)
    finally:
        _end_rank(run, flag_state(run.dir) or "failed")
        stop_heartbeat()
        restore_handlers(previous_handlers)
        release_lock(run.dir)
        if run.ranks and run.ranks.recorded:
            cancel_srun_step()  # ranks still waiting on the one gone would wait out their timeout


def claim(run: Run) -> str | int:
    """Decide what to do with the run and take its lock: ``start``, ``resume`` or an exit code."""
    owner = live_owner(run.dir)  # may watch a lock for a while: not while holding the claim lock
    if owner:
        print(f"[{run.name}] is being trained by {owner}; refusing to start a second copy.")
        return EXIT_LOCKED
    with claiming(run.dir.parent):  # another launch of this run decides after this one, not during
        return _claim(run)


def _claim(run: Run) -> str | int:
    args = run.args
    owner = live_owner(run.dir)
    if owner:
        print(f"[{run.name}] is being trained by {owner}; refusing to start a second copy.")
        return EXIT_LOCKED
    state = flag_state(run.dir)
    differences = config_differences(run.dir, run.hparams)
    if differences and not args.force:
        print(f"[{run.name}] was trained with another configuration; not skipping or resuming it:")
        for line in differences:
            print(f"  {line}")
        print("  --force trains it again with this one (the old run is kept, renamed); or pick a --run_name.")
        return EXIT_CONFLICT
    resume_failed = state == "failed" and args.resume_failed and not differences
    if resume_failed:
        problem = _not_resumable(run)
        if problem:
            print(f"[{run.name}] cannot resume: {problem}; --retry_failed starts it over.")
            return EXIT_FAILED
        print(f"[{run.name}] resuming the failed run from its last checkpoint.")
    elif state in ("finished", "pruned") and not args.force:
        print(f"[{run.name}] {state} already; skipping (--force trains it again). {run.dir}")
        return 0
    elif state == "failed" and not (args.retry_failed or args.force):
        failed = read_json(run.dir / "failed.out")
        reason = failed.get("reason") if isinstance(failed, dict) else None
        print(f"[{run.name}] failed before: {reason or 'see failed.out'}")
        print("  skipping (--resume_failed continues from its checkpoint, --retry_failed starts over).")
        return 0
    if differences or (state in ("finished", "pruned", "failed") and not resume_failed):
        archived = archive(run.dir)
        print(f"[{run.name}] previous {state or 'unfinished'} run kept as {archived.name}")
    if not acquire_lock(run.dir, **(run.ranks.describe() if run.ranks else {})):
        print(f"[{run.name}] another process took the run first; refusing to start a second copy.")
        return EXIT_LOCKED
    # a run with a checkpoint resumes: interrupted, or killed before it could say so
    return "resume" if has_checkpoint(run) else "start"


def _not_resumable(run: Run) -> str | None:
    """Why a failed run cannot continue from its checkpoint, if it cannot."""
    failed = read_json(run.dir / "failed.out")
    if isinstance(failed, dict) and failed.get("diverged"):
        return "its loss diverged, and would again from the same checkpoint"
    if not has_checkpoint(run):
        return "it failed before its first checkpoint"
    return None


def has_checkpoint(run: Run) -> bool:
    """Whether the run has a last checkpoint to resume from (a FIFO or a directory is not one)."""
    return any(path.is_file() for path in run.checkpoints.glob("last.*"))


def share_from_rank_zero(decision: str | int | None) -> str | int | None:
    """Under torchrun every rank must act on rank 0's decision, or the others would hang."""
    dist = sys.modules.get("torch.distributed")  # never imported here: no process group without torch
    if dist is None or not (dist.is_available() and dist.is_initialized()):
        return decision
    shared = [decision]
    dist.broadcast_object_list(shared, src=0)
    return shared[0]


def _train_on_other_rank(run: Run, train: Train) -> int:
    """Train as rank 0 does; rank 0 keeps the books, unless it is gone: then rank 1 says so."""
    try:
        train(run)
    except RunInterrupted:
        _end_rank(run, "interrupted")
        return signal_exit_code(run.stop_signal)
    except RunPruned:
        _end_rank(run, "pruned")
        return 0
    except CheckpointUnusable:
        _end_rank(run, "cannot resume")
        return EXIT_FAILED  # rank 0 says why
    except BaseException as error:
        _end_rank(run, f"{type(error).__name__}: {error}")
        if run.ranks and run.ranks.rank == 1 and not isinstance(error, EXPECTED):
            run.ranks.watching = False  # this thread finds out now
            gone, _ = lost_ranks(run.dir, run.ranks)
            if 0 in gone and _record_gone(run, gone, error):
                release_lock(run.dir)  # rank 0's, left by its death
                cancel_srun_step()
        raise
    _end_rank(run, "finished")
    return 0


def _end_rank(run: Run, how: str) -> None:
    if run.ranks:
        end(run.dir, run.ranks, how)


def _give_up(run: Run, gone: Lost) -> None:
    """Called by the heartbeat thread: a watched rank fell silent while this one waits for it."""
    try:
        if not _record_gone(run, gone, None):
            return  # this process's own training records how the run ended
        if run.ranks and 0 in (run.ranks.rank, *gone):  # rank 0's lock: it is here, or gone
            release_lock(run.dir)
        _end_rank(run, "gave up on " + ", ".join(f"rank {rank}" for rank in gone))
    except OSError as error:  # a full disk: the job ends all the same, without its record
        print(f"[{run.name}] cannot record the ranks gone: {describe_os_error(error)}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    cancel_srun_step()
    os._exit(EXIT_FAILED)  # the training thread may wait in a collective that never returns


def _record_gone(run: Run, gone: Lost, error: BaseException | None) -> bool:
    """``failed.out`` naming the ranks gone, unless a flag says how the run ended already."""
    assert run.ranks is not None
    here = f"rank {run.ranks.rank} on {run.ranks.hosts[run.ranks.rank]}"
    then = f"{type(error).__name__}: {error}" if error else "gave up waiting for it"
    reason = f"{'; '.join(gone.values())}; then {here}: {then}"
    with run.ranks.recording:  # the heartbeat thread and the training thread: one of them records
        if run.ranks.recorded or flag_state(run.dir):
            return False
        where = progress_summary(run.dir)
        write_flag(run.dir, "failed.out", reason=reason, lost_ranks=list(gone.values()), **where)
        manifest = read_json(run.dir / "manifest.json")
        if isinstance(manifest, dict) and isinstance(manifest.get("history"), list):
            update_manifest(run, "failed", manifest, reason=reason)
        run.ranks.recorded = True
    print(f"[{run.name}] failed: {reason}", file=sys.stderr)
    return True


def _train_and_record(run: Run, train: Train) -> int:
    try:
        return _train_and_record_unguarded(run, train)
    except OSError as error:  # the disk filled up, or the directory vanished, while writing a flag
        print(f"[{run.name}] cannot write its record: {describe_os_error(error)}", file=sys.stderr)
        print(f"  fix that, then {relaunch_advice(run)}", file=sys.stderr)
        return EXIT_FAILED


def relaunch_advice(run: Run) -> str:
    """What a plain relaunch will do with the run as it is on disk now: say only that."""
    state = flag_state(run.dir)
    if state == "failed" and has_checkpoint(run):
        return "relaunch with --resume_failed to continue from its last checkpoint (a plain one skips it)."
    if state == "failed":
        return "relaunch with --retry_failed to start it over (a plain relaunch skips it)."
    if state in ("finished", "pruned"):
        return f"note that it {'finished' if state == 'finished' else 'was pruned'}: a relaunch skips it."
    if has_checkpoint(run):
        return "relaunch: the run resumes from its last checkpoint."
    return "relaunch: the run starts over (it had no checkpoint yet)."


def _train_and_record_unguarded(run: Run, train: Train) -> int:
    flag = flag_state(run.dir)  # put back if the checkpoint is refused
    before = read_json(run.dir / f"{flag}.out") if flag else None
    clear_flags(run.dir)
    write_json(run.dir / "hparams.json", run.hparams)
    layout = run.ranks.describe() if run.ranks else {}
    manifest = update_manifest(run, "resume" if run.resuming else "start", **layout)
    print(f"[{run.name}] {'resuming' if run.resuming else 'training'} in {run.dir}")
    started = time.monotonic()
    try:
        metrics = train(run)
    except OtherWorldSize as error:
        return _refuse_world_size(run, manifest, error, flag, before)
    except CheckpointUnusable as error:
        return _record_unusable_checkpoint(run, manifest, error, before if flag == "failed" else None)
    except RunPruned as pruned:
        where = progress_summary(run.dir)
        write_flag(run.dir, "pruned.out", reason=f"pruned by the search {pruned}", **where)
        update_manifest(run, "pruned", manifest, **where)
        print(f"[{run.name}] pruned by the search {pruned}: its epochs fell behind the other trials'")
        return 0
    except BaseException as error:  # whatever ends the run must leave its reason behind
        others: Lost = {}
        if run.ranks and not isinstance(error, EXPECTED):  # a collective may have failed: why?
            run.ranks.watching = False  # this thread finds out now
            gone, others = lost_ranks(run.dir, run.ranks)
            if gone:
                _record_gone(run, gone, error)
            if gone or run.ranks.recorded:  # (the heartbeat thread may have said it first)
                return EXIT_FAILED
        if run.stop_signal is not None and not isinstance(error, RunDiverged) and not others:
            # RunInterrupted from the loop, or a framework's own exit on the same signal; not
            # the launcher's SIGTERM after another rank failed, which would resume into its error
            return _record_interruption(run, manifest, error)
        return _record_failure(run, manifest, error, others)
    duration = round(time.monotonic() - started, 3)
    write_flag(run.dir, "finished.out", metrics=metrics, duration_s=duration, **progress_summary(run.dir))
    update_manifest(run, "finished", manifest, metrics=metrics)
    shown = ", ".join(f"{key}={value:.4f}" for key, value in sorted(metrics.items()))
    print(f"[{run.name}] finished in {duration:.1f}s: {shown}")
    return 0


def _record_interruption(run: Run, manifest: dict[str, Any], stop: BaseException) -> int:
    where = progress_summary(run.dir)
    detail = str(stop) or type(stop).__name__
    write_flag(run.dir, "interrupted.out", reason=f"{run.stop_signal}: {detail}", **where)
    update_manifest(run, "interrupted", manifest, signal=run.stop_signal, **where)
    print(f"[{run.name}] interrupted by {run.stop_signal} ({detail}); relaunch to resume.")
    requeue_if_slurm(run.stop_signal)
    return signal_exit_code(run.stop_signal)


def _refuse_world_size(
    run: Run, manifest: dict[str, Any], error: OtherWorldSize, flag: str | None, before: Any
) -> int:
    """The run is left as it was found: launched on its own number of processes, it resumes."""
    if flag and isinstance(before, dict):
        write_json(run.dir / f"{flag}.out", before)
    update_manifest(run, "refused", manifest, reason=str(error))
    print(f"[{run.name}] not resumed: {error}", file=sys.stderr)
    return EXIT_CONFLICT


def _record_unusable_checkpoint(
    run: Run, manifest: dict[str, Any], error: CheckpointUnusable, failed_before: Any
) -> int:
    """One line, not a traceback; a failed run keeps the reason it failed for in the first place."""
    reason = f"cannot resume: {error}"
    if isinstance(failed_before, dict):
        write_json(run.dir / "failed.out", failed_before)
        kept = "failed.out keeps the reason it failed before; "
    else:
        write_flag(run.dir, "failed.out", reason=reason, **progress_summary(run.dir))
        kept = ""
    update_manifest(run, "failed", manifest, reason=reason)
    print(f"[{run.name}] {reason}; {kept}--retry_failed starts it over.", file=sys.stderr)
    return EXIT_FAILED


def _record_failure(
    run: Run, manifest: dict[str, Any], error: BaseException, others: Lost | None = None
) -> int:
    """``failed.out`` with the reason and traceback; ``others``: ranks that failed with errors too."""
    reason = f"{type(error).__name__}: {error}"
    # another rank's own error first (out of memory, say), unless it is this one's too
    causes = [text for text in (others or {}).values() if not text.endswith(f" failed: {one_line(reason)}")]
    if causes and run.ranks:
        reason = f"{'; '.join(causes)}; then rank 0 on {run.ranks.hosts[0]}: {reason}"
    lines = traceback.format_exception(type(error), error, error.__traceback__)
    write_flag(
        run.dir,
        "failed.out",
        reason=reason,
        diverged=isinstance(error, RunDiverged),
        traceback="".join(lines).splitlines(),
        **({"other_ranks": list(others.values())} if others else {}),
        **progress_summary(run.dir),
    )
    update_manifest(run, "failed", manifest, reason=reason)
    if isinstance(error, OSError):  # the file system's doing, not a bug: one line says it all
        print(f"[{run.name}] failed: {describe_os_error(error)}", file=sys.stderr)
    else:
        print(f"[{run.name}] failed: {reason}", file=sys.stderr)
        print("".join(lines), file=sys.stderr)
    return EXIT_FAILED
