"""One run over the preseed folder: bundles in parallel, results in order, prune, report."""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from loader import log, state, verified
from loader.bundle import open_bundle
from loader.client import Client
from loader.discover import BundleFile, Skipped
from loader.errors import BundleError, ContainerdError, LoaderError
from loader.importer import Importer, ImportStats, Options, Pending

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


@dataclass
class BundleResult:
    """One bundle's line of the log and entry of the report."""

    namespace: str
    file: str
    names: list[str]
    format: str
    bytes: int
    seconds: float
    result: str  # loaded, unchanged, verified or failed
    error: str | None = None
    blobs_written: int = 0
    blobs_present: int = 0
    layers_unpacked: int = 0
    layers_present: int = 0
    images_changed: int = 0
    manifest: str | None = None  # with --manifest: hashed, or recorded (verified before)
    warnings: list[str] = field(default_factory=list)


@dataclass
class Pruned:
    namespace: str
    name: str
    bundle: str


@dataclass
class Report:
    """The JSON summary written by --report."""

    preseed_dir: str
    dry_run: bool
    exit_code: int = EXIT_OK
    seconds: float = 0.0
    error: str | None = None
    bundles: list[BundleResult] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    pruned: list[Pruned] = field(default_factory=list)

    def to_json(self) -> str:
        body = asdict(self)
        counts = {"loaded": 0, "unchanged": 0, "verified": 0, "failed": 0}
        for bundle in self.bundles:
            counts[bundle.result] += 1
        body["summary"] = {"bundles": len(self.bundles), **counts, "pruned": len(self.pruned)}
        body["version"] = 1
        return json.dumps(body, indent=2, sort_keys=True) + "\n"

    def write(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(self.to_json())
        os.replace(tmp, path)


@dataclass
class Settings:
    address: str
    preseed_dir: Path
    options: Options
    jobs: int
    timeout: float
    dry_run: bool = False
    prune: bool = False


def skipped_entry(entry: Skipped) -> dict[str, str]:
    """A skipped or refused path in the report."""
    body = {"path": str(entry.path), "reason": entry.reason}
    if entry.refused:
        body["refused"] = "true"
    return body


def _error_text(e: BaseException) -> str:
    if isinstance(e, LoaderError):
        return str(e)
    return f"internal error: {type(e).__name__}: {e}"


def _result(bundle: BundleFile, stats: ImportStats, seconds: float, outcome: str) -> BundleResult:
    return BundleResult(
        namespace=bundle.namespace,
        file=str(bundle.path),
        names=list(stats.names),
        format=stats.format,
        bytes=stats.bytes_written,
        seconds=seconds,
        result=outcome,
        blobs_written=stats.blobs_written,
        blobs_present=stats.blobs_present,
        layers_unpacked=stats.layers_unpacked,
        layers_present=stats.layers_present,
        images_changed=stats.images_changed,
        manifest=stats.manifest or None,
        warnings=list(stats.warnings),
    )


def _log_result(result: BundleResult) -> None:
    for warning in result.warnings:
        log.warning("bundle warning", namespace=result.namespace, file=result.file, warning=warning)
    fields: dict[str, log.Value] = dict(
        namespace=result.namespace,
        file=result.file,
        names=result.names,
        bytes=result.bytes,
        seconds=result.seconds,
        result=result.result,
        format=result.format,
        blobs_written=result.blobs_written,
        blobs_present=result.blobs_present,
        layers_unpacked=result.layers_unpacked,
        layers_present=result.layers_present,
        images_changed=result.images_changed,
    )
    if result.manifest is not None:
        fields["manifest"] = result.manifest
    if result.error is not None:
        log.error("bundle", **fields, error=result.error)
    else:
        log.info("bundle", **fields)


def run(settings: Settings, bundles: Sequence[BundleFile], skipped: Sequence[Skipped]) -> Report:
    """Load (or verify) every bundle; never raises for a bad bundle or containerd."""
    started = time.monotonic()
    report = Report(str(settings.preseed_dir), settings.dry_run)
    report.skipped = [skipped_entry(s) for s in skipped]
    if settings.dry_run:
        _each(settings.jobs, bundles, lambda b: _verify(b, settings.options), report)
    else:
        _load_all(settings, bundles, report, skipped)
    failed = any(b.result == "failed" for b in report.bundles)
    failed = failed or any(s.get("refused") for s in report.skipped)
    if report.exit_code == EXIT_OK and failed:
        report.exit_code = EXIT_FAILED
    report.seconds = time.monotonic() - started
    counts = {r: sum(b.result == r for b in report.bundles) for r in ("loaded", "unchanged", "verified")}
    log.info(
        "done",
        bundles=len(report.bundles),
        **{k: v for k, v in counts.items() if v or k != "verified"},
        failed=sum(b.result == "failed" for b in report.bundles),
        pruned=len(report.pruned),
        seconds=report.seconds,
        exit_code=report.exit_code,
    )
    return report


def _each(
    jobs: int,
    bundles: Sequence[BundleFile],
    work: Callable[[BundleFile], BundleResult | Skipped],
    report: Report,
) -> None:
    """Run work over bundles on a pool; log and record the results in bundle order."""
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="bundle") as pool:
        futures = [pool.submit(work, b) for b in bundles]
        for future in futures:
            _record(future.result(), report)


def _record(outcome: BundleResult | Skipped, report: Report) -> None:
    """Log one bundle's outcome and add it to the report."""
    if isinstance(outcome, Skipped):
        # The bundle does not match the manifest: refused, as before any containerd work.
        log.error("refused", file=str(outcome.path), reason=outcome.reason)
        report.skipped.append(skipped_entry(outcome))
        return
    _log_result(outcome)
    report.bundles.append(outcome)


def _tampering(bundle: BundleFile, e: verified.Tampering) -> Skipped:
    return Skipped(bundle.path, str(e), refused=True)


def _verify(bundle: BundleFile, options: Options) -> BundleResult | Skipped:
    t0 = time.monotonic()
    stats = ImportStats()
    if bundle.sha256 is not None:
        # No containerd state to trust: always hashed.
        try:
            digest, _ = verified.hash_file(bundle.path)
        except verified.Tampering as e:
            return _tampering(bundle, e)
        except OSError as e:
            return Skipped(bundle.path, f"cannot read: {e.strerror or e}", refused=True)
        if digest != bundle.sha256:
            reason = f"tampering: sha256 {digest}, the manifest says {bundle.sha256}"
            return Skipped(bundle.path, reason, refused=True)
        stats.manifest = verified.HASHED
    try:
        with open_bundle(
            bundle.path, options.platform, all_platforms=options.all_platforms
        ) as opened:
            stats.names = opened.names
            stats.format = opened.format
            if not opened.archive.seekable:
                stats.format += "+" + opened.archive.compression
            stats.warnings.extend(opened.warnings)
            archive = opened.archive
            for blob in opened.blobs.values():
                if blob.member is not None and not blob.verified:
                    actual = archive.hash(blob.member)
                    if actual != blob.desc.digest:
                        raise BundleError(
                            f"blob {blob.desc.digest} is corrupted (content hashes to {actual})"
                        )
            for member in archive.members.values():
                if member.name.startswith("blobs/sha256/") and member.digest is None:
                    expected = "sha256:" + member.name.rsplit("/", 1)[1]
                    actual = archive.hash(member)
                    if actual != expected:
                        raise BundleError(f"blob {expected} is corrupted (content hashes to {actual})")
    except Exception as e:
        result = _result(bundle, stats, time.monotonic() - t0, "failed")
        result.error = _error_text(e)
        return result
    return _result(bundle, stats, time.monotonic() - t0, "verified")


def _load_all(
    settings: Settings,
    bundles: Sequence[BundleFile],
    report: Report,
    skipped: Sequence[Skipped] = (),
) -> None:
    client = Client(settings.address)
    try:
        try:
            client.wait_ready(settings.timeout)
        except ContainerdError as e:
            log.error("containerd unreachable", address=settings.address, error=str(e))
            report.exit_code = EXIT_USAGE
            report.error = f"containerd unreachable: {e}"
            return
        with ThreadPoolExecutor(max_workers=settings.jobs, thread_name_prefix="layer") as layers:
            importer = Importer(client, settings.options, layers)
            _import_all(importer, settings.jobs, bundles, report)
        if settings.prune:
            _prune(client, bundles, report, skipped)
    finally:
        client.close()


# What preparing one bundle gave: stats, the prepared import or an error, seconds, a refusal.
_Prepared = tuple[ImportStats, Pending | None, str | None, float, Skipped | None]


def _import_all(
    importer: Importer, jobs: int, bundles: Sequence[BundleFile], report: Report
) -> None:
    """Prepare bundles in parallel; publish their image records in bundle order."""

    def prepare(bundle: BundleFile) -> _Prepared:
        stats = ImportStats()
        t0 = time.monotonic()
        try:
            pending = importer.prepare(
                bundle.namespace, bundle.path, stats, sha256=bundle.sha256
            )
            return stats, pending, None, time.monotonic() - t0, None
        except verified.Tampering as e:
            return stats, None, str(e), time.monotonic() - t0, _tampering(bundle, e)
        except Exception as e:
            return stats, None, _error_text(e), time.monotonic() - t0, None

    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="bundle") as pool:
        futures: list[Future[_Prepared]] = [pool.submit(prepare, b) for b in bundles]
        for bundle, future in zip(bundles, futures):
            stats, pending, error, seconds, refused = future.result()
            if refused is not None:
                _record(refused, report)
                continue
            t0 = time.monotonic()
            if pending is not None:
                try:
                    importer.publish(pending, stats)
                except Exception as e:
                    error = _error_text(e)
            outcome = "failed" if error else ("unchanged" if stats.unchanged else "loaded")
            result = _result(bundle, stats, seconds + time.monotonic() - t0, outcome)
            result.error = error
            _record(result, report)


def _prune(
    client: Client, bundles: Sequence[BundleFile], report: Report, skipped: Sequence[Skipped] = ()
) -> None:
    """Remove images with our bundle label whose bundle is gone, or no longer holds them."""
    present = {(b.namespace, b.path.name) for b in bundles}
    # A refused bundle is still there: its images stay as they are.
    present |= {(s.path.parent.name, s.path.name) for s in skipped if s.refused}
    loaded = {
        (b.namespace, Path(b.file).name): set(b.names)
        for b in report.bundles
        if b.result in ("loaded", "unchanged")
    }
    try:
        for namespace in client.namespace_list():
            scoped = client.with_namespace(namespace)
            for image in scoped.image_list():
                bundle = image.labels.get(state.LABEL_BUNDLE)
                if bundle is None:
                    continue
                key = (namespace, bundle)
                if key in present and (key not in loaded or image.name in loaded[key]):
                    continue
                scoped.image_delete(image.name)
                pruned = Pruned(namespace, image.name, bundle)
                report.pruned.append(pruned)
                log.info("pruned", namespace=namespace, name=image.name, bundle=bundle)
    except ContainerdError as e:
        log.error("prune failed", error=str(e))
        report.exit_code = EXIT_FAILED
        report.error = f"prune failed: {e}"
