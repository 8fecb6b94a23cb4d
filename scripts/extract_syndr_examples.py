"""Extract every example JSON message of the Syndr API document into test fixtures.

    python scripts/extract_syndr_examples.py [--seed PATH] [--out DIR]

The document is the specification of record, and its examples are what the
wire models are tested against; extracting them by program (rather than by
hand) keeps the fixtures honest and lets a test prove they still match the
document. Output, one file per example, in ``tests/resources/syndr/``:

* ``<method>.request.json`` / ``<method>.response.json`` (``public.get_order_book``),
  the request taken from the shell example (``curl --data '{...}'``) where
  there is one, else from the Python ``msg = {...}`` / ``payload = {...}``;
* ``channel.<channel>.subscribe.request.json`` / ``channel.<channel>.notification.json``,
  ``<channel>`` being the section heading without its ``{placeholders}`` and
  depth (``book.{instrument_name}.15.raw`` -> ``book.raw``);
* ``jsonrpc.request.json`` / ``jsonrpc.response.json`` for the generic
  envelope examples;
* ``README.md``: the seed's hash, every fixture with its source line and the
  normalisations applied, the examples that could not be recovered and why,
  and inconsistencies noticed on the way.

Mechanical normalisations only: ``//`` comments, trailing commas and bare
``<PLACEHOLDER>`` values (quoted as strings). Anything else that is not JSON
is reported, never guessed. Output is canonical (2-space indent, key order and
number spelling as in the document), so re-running reproduces it byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# shared/ sits beside the checkout.
DEFAULT_SEED = Path(__file__).resolve().parents[2] / "shared" / "seeds" / "002_1080faa2c7e60ae3.txt"
DEFAULT_OUT = REPO / "tests" / "resources" / "syndr"

METHOD_HEADING = re.compile(r"(?:public|private)/[a-z0-9_]+")
CHANNEL_HEADING = re.compile(r"(?:ticker|book|trades|quotes|user)\.[A-Za-z0-9_.{}-]+")
METHOD_MENTION = re.compile(r"\b(?:public|private)/[a-z0-9_]+\b")
OTHER_HEADINGS = {
    "Welcome": "welcome",
    "Naming": "naming",
    "JSON-RPC": "jsonrpc",
    "API Key Setup": "api_key_setup",
    "Authentication": "authentication",
    "Methods": "methods",
    "Combo Blocks": "combo_blocks",
    "Block Trade": "block_trade",
    "Market Maker": "market_maker",
}
CURL_DATA = re.compile(r"^\s*--data '")
PYTHON_LITERAL = re.compile(r"^\s*(?:msg|payload|json_rpc_request) = \{$")
EXAMPLE_MARKER = re.compile(r"^>?\s*An example of the response")
# The same request body in code form: Python `json.dumps({...})`, Go backticks, Rust raw strings.
CODE_FORMS = {
    "Python": re.compile(r"payload = json\.dumps\(\{"),
    "Go": re.compile(r"strings\.NewReader\(`\{"),
    "Rust": re.compile(r'let data = r#"\{'),
}
PLACEHOLDER = re.compile(r"<[A-Z_]+>")
NOTIFICATION_METHODS = ("subscription", "subscriptions")


class ExtractError(Exception):
    """The document changed in a way this script does not understand."""


@dataclass
class Section:
    kind: str  # "method", "channel" or "other"
    name: str  # "public/get_order_book", "book.{instrument_name}.15.raw", "authentication"
    line: int

    @property
    def slug(self) -> str:
        if self.kind == "method":
            return self.name.replace("/", ".")
        if self.kind == "channel":
            return channel_slug(self.name)
        return self.name


@dataclass
class Example:
    line: int  # 1-based line of the document where the JSON starts
    section: Section
    source: str  # "curl", "python", "json"
    role: str = ""  # "request", "response", "notification"
    method: str = ""  # the method a request calls / a response answers
    obj: Any = None
    fixes: list[str] = field(default_factory=list)
    problem: str = ""  # why it could not be recovered (empty when it was)
    name: str = ""


def channel_slug(heading: str) -> str:
    """`book.{instrument_name}.15.raw` -> `book.raw`; `user.bursts.{instrument.name}` -> `user.bursts`."""
    without = re.sub(r"\{[^}]*\}", "", heading)
    parts = [part for part in without.split(".") if part and not part.isdigit()]
    return ".".join(parts)


# --------------------------------------------------------------------------- JSON text scanning


def match_braces(text: str, start: int) -> int:
    """Index just past the `}` closing the `{` at `start`, skipping JSON strings."""
    depth = 0
    in_string = False
    i = start
    while i < len(text):
        ch = text[i]
        if in_string:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ExtractError(f"unbalanced braces from offset {start}")


def normalise(text: str) -> tuple[str, list[str]]:
    """Drop `//` comments and trailing commas, quote `<PLACEHOLDER>`s; report which were needed."""
    out: list[str] = []
    fixes: list[str] = []
    in_string = False
    i = 0
    while i < len(text):
        ch = text[i]
        if in_string:
            out.append(ch)
            if ch == "\\":
                out.append(text[i + 1])
                i += 1
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
            out.append(ch)
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
            _note(fixes, "removed // comment")
            continue
        elif ch == ",":
            rest = text[i + 1 :].lstrip()
            if rest[:1] in ("}", "]"):
                _note(fixes, "removed trailing comma")
            else:
                out.append(ch)
        elif ch == "<" and (placeholder := PLACEHOLDER.match(text, i)):
            out.append(json.dumps(placeholder.group(0)))
            i = placeholder.end()
            _note(fixes, f"quoted placeholder {placeholder.group(0)}")
            continue
        else:
            out.append(ch)
        i += 1
    return "".join(out), fixes


def _note(fixes: list[str], fix: str) -> None:
    if fix not in fixes:
        fixes.append(fix)


def _exact_float(token: str) -> float:
    """Floats are written back with repr(); refuse any the document spells differently."""
    value = float(token)
    if repr(value) != token:
        raise ExtractError(f"number {token} would not be written back as spelled")
    return value


def load_json(text: str) -> Any:
    return json.loads(text, parse_float=_exact_float)


# --------------------------------------------------------------------------- the document


def scan(lines: list[str]) -> tuple[list[Example], list[Example]]:
    """Walk the document; return (examples found, example markers with no JSON after them)."""
    examples: list[Example] = []
    missing: list[Example] = []
    section = Section("other", "preamble", 1)
    last_mention = ""
    pending_marker: int | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if METHOD_HEADING.fullmatch(line):
            section = Section("method", line, i + 1)
        elif CHANNEL_HEADING.fullmatch(line):
            section = Section("channel", line, i + 1)
        elif line in OTHER_HEADINGS:
            section = Section("other", OTHER_HEADINGS[line], i + 1)
        if pending_marker is not None and (
            stripped == "Response" or METHOD_HEADING.fullmatch(line) or CHANNEL_HEADING.fullmatch(line)
        ):
            missing.append(Example(pending_marker, section, "json", problem="no example follows the heading"))
            pending_marker = None
        if EXAMPLE_MARKER.match(line):
            pending_marker = i + 1

        if CURL_DATA.match(line):
            text, end = _curl_body(lines, i)
            examples.append(_request(text, i + 1, section, "curl"))
            last_mention = examples[-1].method or last_mention
            i = end
            continue
        if PYTHON_LITERAL.match(line):
            joined = "\n".join(lines[i:])
            start = joined.index("{")
            stop = match_braces(joined, start)
            examples.append(_request(joined[start:stop], i + 1, section, "python"))
            last_mention = examples[-1].method or last_mention
            i += joined[:stop].count("\n") + 1
            continue
        if line.startswith("{"):
            joined = "\n".join(lines[i:])
            stop = match_braces(joined, 0)
            example = _message(joined[:stop], i + 1, section, last_mention)
            examples.append(example)
            pending_marker = None
            i += joined[:stop].count("\n") + 1
            continue
        mentions = METHOD_MENTION.findall(line)
        if mentions:
            last_mention = mentions[-1]
        i += 1
    return examples, missing


def _curl_body(lines: list[str], i: int) -> tuple[str, int]:
    """The text between `--data '` and the next `'`, and the index of the line after it."""
    first = lines[i].split("--data '", 1)[1]
    parts = [first]
    j = i
    while "'" not in parts[-1]:
        j += 1
        parts.append(lines[j])
    parts[-1] = parts[-1].split("'", 1)[0]
    return "\n".join(parts), j + 1


def _request(text: str, line: int, section: Section, source: str) -> Example:
    example = Example(line, section, source, role="request")
    mention = re.search(r'"method"\s*:\s*"([^"]+)"', text)
    example.method = mention.group(1) if mention else ""
    normalised, example.fixes = normalise(text)
    try:
        obj = load_json(normalised)
    except json.JSONDecodeError as exc:
        names = sorted(set(re.findall(r":\s*([A-Za-z_][\w.]*(?:\(|\b))", normalised)) - {"true", "false", "null"})
        what = f"values are code, not JSON ({', '.join(n.rstrip('(') for n in names)})" if names else str(exc)
        example.problem = what
        return example
    method = obj.get("method") if isinstance(obj, dict) else None
    if not isinstance(method, str) or not METHOD_HEADING.fullmatch(method):
        example.problem = f"a template, not an example: method is {method!r}"
    elif not isinstance(obj.get("params"), dict):
        example.problem = f"a template, not an example: params is {obj.get('params')!r}"
    example.obj = obj
    return example


def _message(text: str, line: int, section: Section, last_mention: str) -> Example:
    example = Example(line, section, "json")
    normalised, example.fixes = normalise(text)
    try:
        obj = load_json(normalised)
    except json.JSONDecodeError as exc:
        example.problem = f"not JSON after normalisation: {exc}"
        return example
    example.obj = obj
    if not isinstance(obj, dict) or not obj:
        example.problem = "an empty object, not a JSON-RPC message"
    elif obj.get("method") in NOTIFICATION_METHODS and isinstance(obj.get("params"), dict):
        example.role = "notification"
    elif "result" in obj or "error" in obj:
        example.role = "response"
        example.method = section.name if section.kind == "method" else last_mention
    elif isinstance(obj.get("method"), str):
        example.role = "request"
        example.method = obj["method"]
    else:
        example.problem = "neither a request, a response nor a notification"
    return example


# --------------------------------------------------------------------------- naming


def assign_names(examples: list[Example]) -> None:
    """Fixture names: method or channel, then the role; examples outside their own section say where from."""
    for ex in examples:
        if ex.problem:
            continue
        if ex.section.kind == "channel":
            ex.name = f"channel.{ex.section.slug}." + ("subscribe.request" if ex.role == "request" else ex.role)
        elif ex.section.name == "jsonrpc":
            ex.name = f"jsonrpc.{ex.role}"
        else:
            ex.name = f"{ex.method.replace('/', '.')}.{ex.role}"
    by_name: dict[str, list[Example]] = {}
    for ex in examples:
        if ex.name:
            by_name.setdefault(ex.name, []).append(ex)
    for name, group in by_name.items():
        if len(group) == 1:
            continue
        own = [ex for ex in group if ex.section.kind == "method" and ex.section.name == ex.method]
        if len(own) > 1:
            raise ExtractError(f"{name}: {len(own)} examples in the method's own section")
        for ex in group:
            if ex not in own:
                stem, role = name.rsplit(".", 1)
                ex.name = f"{stem}.{ex.section.slug}.{role}"
    names = [ex.name for ex in examples if ex.name]
    if len(names) != len(set(names)):
        raise ExtractError(f"duplicate fixture names: {sorted(n for n in names if names.count(n) > 1)}")


def observations(examples: list[Example]) -> list[str]:
    """Inconsistencies the examples show by themselves (mismatched channels and ids)."""
    notes: list[str] = []
    for ex in examples:
        if ex.role == "notification" and ex.section.kind == "channel":
            channel = ex.obj["params"].get("channel", "")
            pattern = re.escape(ex.section.name)
            pattern = re.sub(r"\\\{[^}]*\\\}", "[^.]+", pattern).replace("duration", "[0-9]+ms")
            if not re.fullmatch(pattern, channel):
                notes.append(f"line {ex.line}: section `{ex.section.name}` shows a notification for `{channel}`")
            method = ex.obj.get("method")
            expected = "subscriptions" if ex.section.name.startswith("user.") else "subscription"
            if method != expected:
                notes.append(f"line {ex.line}: `{channel}` notification has method `{method}`"
                             f" (market-data channels elsewhere use `subscription`)")
    requests = {ex.section.name: ex for ex in examples if ex.role == "request" and ex.section.kind == "method"}
    for ex in examples:
        if ex.role == "response" and ex.section.kind == "method" and ex.section.name in requests:
            request_id = requests[ex.section.name].obj.get("id")
            if ex.obj.get("id") != request_id:
                got = f"id {ex.obj['id']!r}" if "id" in ex.obj else "no id"
                notes.append(f"line {ex.line}: `{ex.section.name}` response has {got}, its request id {request_id!r}")
    return notes


def cross_check(text: str, examples: list[Example]) -> tuple[int, list[str]]:
    """Compare the Python/Go/Rust request bodies with the shell one of the same method."""
    shell = {ex.method: ex.obj for ex in examples if ex.source == "curl" and ex.section.kind == "method" and ex.obj}
    checked = 0
    notes: list[str] = []
    for language, pattern in CODE_FORMS.items():
        for found in pattern.finditer(text):
            start = text.index("{", found.start())
            line = text.count("\n", 0, start) + 1
            body, _ = normalise(text[start : match_braces(text, start)])
            try:
                obj = load_json(re.sub(r"\b(True|False|None)\b", lambda m: PYTHON_CONSTANTS[m.group(1)], body))
            except json.JSONDecodeError:
                notes.append(f"line {line}: the {language} request body is not JSON")
                continue
            reference = shell.get(obj.get("method", ""))
            if reference is None:
                continue
            checked += 1
            if obj != reference:
                notes.append(f"line {line}: the {language} body of `{obj['method']}` differs from the shell one")
    return checked, notes


PYTHON_CONSTANTS = {"True": "true", "False": "false", "None": "null"}


# --------------------------------------------------------------------------- output


def render(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def readme(seed: Path, text: str, digest: str, examples: list[Example], missing: list[Example]) -> str:
    good = sorted((ex for ex in examples if ex.name), key=lambda ex: ex.name)
    bad = sorted([ex for ex in examples if ex.problem] + missing, key=lambda ex: ex.line)
    out = [
        "# Syndr API examples",
        "",
        "Generated by `python scripts/extract_syndr_examples.py`; do not edit by hand.",
        f"Source: `{seed.name}` (sha256 `{digest}`). `tests/unit/test_syndr_extract.py`",
        "checks that re-running the extractor reproduces this directory exactly.",
        "",
        "Requests come from the shell (`curl --data`) examples where the document has them,",
        "otherwise from the Python `msg = {...}` / `payload = {...}` literals. Channel fixtures",
        "are named after the section heading without placeholders and depth",
        "(`book.{instrument_name}.15.raw` -> `channel.book.raw.*`).",
        "",
        "## Fixtures",
        "",
        "| File | Line | Section | Normalised |",
        "| --- | ---: | --- | --- |",
    ]
    for ex in good:
        fixes = "; ".join(ex.fixes) or "-"
        out.append(f"| `{ex.name}.json` | {ex.line} | `{ex.section.name}` | {fixes} |")
    out += ["", "## Examples that could not be recovered", ""]
    if not bad:
        out.append("None.")
    for ex in bad:
        what = "request" if ex.role == "request" else "example"
        if ex.method:
            what = f"`{ex.method}` {what}"
        out.append(f"- line {ex.line}, section `{ex.section.name}`, {what}: {ex.problem}.")
    checked, differences = cross_check(text, examples)
    notes = observations(examples) + differences
    out += ["", "## Inconsistencies the examples show", ""]
    out += [f"- {note}." for note in notes] or ["None."]
    out += ["", f"The {checked} Python, Go and Rust request bodies were compared with the shell ones;",
            "differences, if any, are listed above."]
    return "\n".join(out) + "\n"


def extract(seed: Path) -> dict[str, str]:
    """File name -> content for every output file."""
    raw = seed.read_bytes()
    text = raw.decode("utf-8")
    examples, missing = scan(text.splitlines())
    assign_names(examples)
    files = {f"{ex.name}.json": render(ex.obj) for ex in examples if ex.name}
    files["README.md"] = readme(seed, text, hashlib.sha256(raw).hexdigest(), examples, missing)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seed", type=Path, default=DEFAULT_SEED)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    files = extract(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for stale in args.out.iterdir():
        if stale.is_file() and stale.name not in files and (stale.suffix == ".json" or stale.name == "README.md"):
            stale.unlink()
    for name, content in sorted(files.items()):
        (args.out / name).write_text(content, encoding="utf-8")
    print(f"{len(files) - 1} examples written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
