"""The template a project was made from, kept inside the project as the base of later updates.

``dlscaffold update`` merges three ways: the project as the template rendered
it, the project as it is now, and the project as the current template renders
it. The first needs the old template, which a user who installed a newer
dlscaffold from a wheel no longer has. So ``new`` keeps a copy of the template
in the project (``.dlscaffold-template.tar.gz``, about 50 KB, committed with
everything else, so a clone has it too), and the record names its content
hash. ``add-task`` renders from that copy, so every task of a project comes
from the same template; ``update`` replaces it with the current one.

The archive is written byte for byte the same for the same template (sorted
entries, no times or owners), so git stores it once, and is read as
untrusted input: sizes are capped, only plain files and directories with
relative paths are taken, and its content must hash to what the record says.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path, PurePosixPath

from dlscaffold import files
from dlscaffold.errors import NotAProjectError, TemplateError
from dlscaffold.render import SKIPPED_NAMES, SKIPPED_SUFFIXES
from dlscaffold.template import PROJECT_DIR_NAME, Template

ARCHIVE_NAME = ".dlscaffold-template.tar.gz"
MAX_ARCHIVE_BYTES = 4 * 1024 * 1024  # compressed; the template is about 50 KB
MAX_TEMPLATE_BYTES = 16 * 1024 * 1024  # unpacked, headers included; the template is about 350 KB
MAX_TEMPLATE_FILES = 2000
VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,39}")


@dataclass(frozen=True)
class TemplateTree:
    """A template's files (relative POSIX path -> executable?, bytes) and what identifies them."""

    files: dict[str, tuple[bool, bytes]]

    @cached_property  # asked for several times per command; the files never change
    def digest(self) -> str:
        """A SHA-256 over paths, executable bits and contents: equal exactly when the templates are."""
        digest = hashlib.sha256()
        for path in sorted(self.files):
            executable, data = self.files[path]
            digest.update(f"{path}\0{int(executable)}\0{len(data)}\0".encode())
            digest.update(data)
        return digest.hexdigest()

    @property
    def version(self) -> str:
        """The version the template states in its ``cookiecutter.json`` (for people; the digest decides).

        It reaches the terminal, the record and conflict markers, so anything but a short
        plain version string (terminal escapes, a newline that would break a marker) is "unknown".
        """
        try:
            variables = json.loads(self.files["cookiecutter.json"][1])
            version = variables.get("_dlscaffold_template_version", "unknown")
        except (KeyError, ValueError, AttributeError, RecursionError):
            return "unknown"
        if isinstance(version, int) and not isinstance(version, bool) and 0 <= version < 10**6:
            return str(version)  # the 0.1.0 template says 1
        return version if isinstance(version, str) and VERSION.fullmatch(version) else "unknown"

    def label(self) -> str:
        return f"{self.version} ({self.digest[:12]})"

    def pack(self) -> bytes:
        """A gzipped tar of the files, the same bytes for the same tree."""
        buffer = io.BytesIO()
        zipped = gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0, compresslevel=9)
        with zipped, tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(self.files):
                executable, data = self.files[path]
                info = tarfile.TarInfo(path)
                info.size = len(data)
                info.mode = 0o755 if executable else 0o644
                info.mtime = 0
                tar.addfile(info, io.BytesIO(data))
        return buffer.getvalue()

    def write(self, destination: Path) -> Template:
        """Lay the files out under ``destination`` and return the template they make."""
        for path, (executable, data) in self.files.items():
            target = destination.joinpath(*PurePosixPath(path).parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            target.chmod(0o755 if executable else 0o644)
        return Template(destination)


def read_tree(root: Path) -> TemplateTree:
    """The template directory ``root`` (holding ``cookiecutter.json``) as a tree of plain files.

    Symlinks, FIFOs and devices are refused rather than followed or read (a
    template given with ``--base-template`` is the user's to name, so anything).
    """
    found: dict[str, tuple[bool, bytes]] = {}
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = sorted(name for name in subdirs if name not in SKIPPED_NAMES)
        for name in [*names, *subdirs]:
            path = Path(directory, name)
            if path.is_symlink():
                raise TemplateError(f"{path} is a symlink; a template holds plain files only")
        for name in names:
            if name in SKIPPED_NAMES or name.endswith(SKIPPED_SUFFIXES):
                continue
            path = Path(directory, name)
            try:
                data = files.read_bytes(path, limit=MAX_TEMPLATE_BYTES)
            except files.UnreadableFile as error:
                raise TemplateError(f"cannot read the template: {error}") from error
            found[path.relative_to(root).as_posix()] = (bool(os.lstat(path).st_mode & stat.S_IXUSR), data)
            if len(found) > MAX_TEMPLATE_FILES:
                raise TemplateError(f"{root} holds more than {MAX_TEMPLATE_FILES} files; not a template")
    return TemplateTree(found)


def unpack(data: bytes, where: str) -> TemplateTree:
    """The tree in an archive written by :meth:`TemplateTree.pack`; anything else is refused."""
    found: dict[str, tuple[bool, bytes]] = {}
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(_gunzip(data, where)), mode="r:") as tar:
            for count, member in enumerate(tar):
                if count > MAX_TEMPLATE_FILES:
                    raise NotAProjectError(f"{where} holds over {MAX_TEMPLATE_FILES} entries; restore it")
                path = PurePosixPath(member.name)
                if path.is_absolute() or ".." in path.parts or not path.parts:
                    raise NotAProjectError(
                        f"{where} names a path outside itself ({member.name!r}); restore it"
                    )
                if member.isdir():
                    continue
                if not member.isreg():
                    raise NotAProjectError(f"{where} holds {member.name!r}, not a plain file; restore it")
                total += member.size
                if total > MAX_TEMPLATE_BYTES:
                    raise NotAProjectError(f"{where} unpacks to over {MAX_TEMPLATE_BYTES} bytes; restore it")
                extracted = tar.extractfile(member)
                assert extracted is not None  # a regular member always has content
                found[path.as_posix()] = (bool(member.mode & stat.S_IXUSR), extracted.read())
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise NotAProjectError(f"{where} is not a readable archive ({error}); restore it from git") from error
    return TemplateTree(found)


def _gunzip(data: bytes, where: str) -> bytes:
    """The uncompressed archive, never more than :data:`MAX_TEMPLATE_BYTES` of it (no gzip bomb)."""
    inflater = zlib.decompressobj(wbits=31)  # 31: gzip framing
    raw = inflater.decompress(data, MAX_TEMPLATE_BYTES + 1)
    if len(raw) > MAX_TEMPLATE_BYTES or inflater.unconsumed_tail:
        raise NotAProjectError(f"{where} unpacks to over {MAX_TEMPLATE_BYTES} bytes; restore it")
    if not inflater.eof:
        raise NotAProjectError(f"{where} is a truncated archive; restore it from git")
    return raw


def store(project_root: Path, tree: TemplateTree) -> None:
    """Write the archive of ``tree`` into the project (or a staging copy of it)."""
    files.write_bytes_atomic(project_root / ARCHIVE_NAME, tree.pack())


def stored(project_root: Path, digest: str) -> TemplateTree:
    """The template kept in the project, checked against the digest its record names."""
    path = project_root / ARCHIVE_NAME
    try:
        data = files.read_bytes(path, limit=MAX_ARCHIVE_BYTES)
    except files.UnreadableFile as error:
        raise NotAProjectError(
            f"cannot read the project's copy of its template: {error}; restore {ARCHIVE_NAME} from git"
        ) from error
    tree = unpack(data, str(path))
    if tree.digest != digest:
        raise NotAProjectError(
            f"{path} is not the template the project record names (it was changed); restore it from git"
        )
    project_files = [name for name in tree.files if name.startswith(PROJECT_DIR_NAME + "/")]
    if "cookiecutter.json" not in tree.files or not project_files:
        raise NotAProjectError(f"{path} holds no cookiecutter template; restore it from git")
    return tree


@contextmanager
def laid_out(tree: TemplateTree) -> Iterator[Template]:
    """``tree`` as a template directory for the duration of the block."""
    with tempfile.TemporaryDirectory(prefix="dlscaffold-template-") as scratch:
        yield tree.write(Path(scratch))


def stamp(rendered_root: Path, tree: TemplateTree) -> None:
    """Keep ``tree`` in a freshly rendered project and name it in the project's record."""
    from dlscaffold.project import read_project

    store(rendered_root, tree)
    record = read_project(rendered_root)
    record.name_template(tree.digest, tree.version)
    record.save()
