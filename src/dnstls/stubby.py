"""Import a Stubby configuration (``stubby.yml``) as ``dnstls stub`` TOML.

``dnstls stub --import-stubby /etc/stubby/stubby.yml`` prints the equivalent TOML. The
stub's TOML keeps Stubby's names and units (milliseconds), so most settings carry over
as they are; what has no equivalent is listed at the end as comments that say why
(e.g. ``dns_transport_list`` with cleartext transports: the stub never uses cleartext).
The result is validated as the stub would load it, and a problem is printed as a
``# WARNING`` line at the top rather than failing the import.

**The YAML subset.** PyYAML is not a dependency, so this module reads the subset of
YAML that Stubby configurations use: block mappings and sequences (also ``- key: value``
items), flow sequences and mappings (``[a, b]``, ``{digest: sha256, value: x}``), plain,
single- and double-quoted scalars, integers, ``true``/``false``, comments. Anchors,
aliases, tags, block scalars (``|``, ``>``) and multi-document files are refused with a
:class:`~dnstls.errors.ConfigError` naming the line. Stubby reads an *unquoted* pin value
as base64 data; quoted or not, the text is the same here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dnstls.errors import ConfigError

_INT = re.compile(r"[-+]?\d+\Z")


# ------------------------------------------------------------------------ YAML subset

@dataclass
class _Line:
    indent: int
    text: str
    number: int


def _strip_comment(text: str) -> str:
    quote = ""
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'" and (i == 0 or text[i - 1] in " \t[{,:-"):
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1] in " \t"):
            return text[:i].rstrip()
    return text.rstrip()


def _lines(text: str, source: str) -> list[_Line]:
    out: list[_Line] = []
    for number, raw in enumerate(text.splitlines(), 1):
        if "\t" in raw[: len(raw) - len(raw.lstrip())]:
            raise ConfigError(f"{source}:{number}", "tabs are not allowed for indentation")
        body = _strip_comment(raw)
        if not body.strip():
            continue
        stripped = body.strip()
        if stripped in ("---", "..."):
            if out:
                raise ConfigError(f"{source}:{number}", "only one YAML document is supported")
            continue
        if stripped[0] in "&*!|>" or re.search(r":\s+[&*!|>]", stripped):
            raise ConfigError(f"{source}:{number}", f"unsupported YAML ({stripped!r}): "
                                                    "anchors, aliases, tags and block scalars")
        out.append(_Line(len(body) - len(body.lstrip()), stripped, number))
    return out


class _Parser:
    def __init__(self, lines: list[_Line], source: str) -> None:
        self.lines = lines
        self.source = source
        self.i = 0

    def error(self, line: _Line, message: str) -> ConfigError:
        return ConfigError(f"{self.source}:{line.number}", message)

    def block(self, indent: int) -> Any:
        line = self.lines[self.i]
        if line.text == "-" or line.text.startswith("- "):
            return self.sequence(indent)
        return self.mapping(indent)

    def sequence(self, indent: int) -> list[Any]:
        items: list[Any] = []
        while self.i < len(self.lines):
            line = self.lines[self.i]
            if line.indent < indent:
                break
            if line.indent > indent:
                raise self.error(line, "unexpected indentation")
            if not (line.text == "-" or line.text.startswith("- ")):
                break
            rest = line.text[1:].lstrip()
            if not rest:
                self.i += 1
                items.append(self.nested(indent, allow_same=False))
            elif _split_key(rest) is not None and rest[0] not in "[{\"'":
                # "- key: value": a mapping whose first key sits after the dash
                offset = len(line.text) - len(rest)
                self.lines[self.i] = _Line(indent + offset, rest, line.number)
                items.append(self.mapping(indent + offset))
            else:
                self.i += 1
                items.append(self.scalar(rest, line))
        return items

    def mapping(self, indent: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        while self.i < len(self.lines):
            line = self.lines[self.i]
            if line.indent < indent:
                break
            if line.indent > indent:
                raise self.error(line, "unexpected indentation")
            if line.text.startswith("- ") or line.text == "-":
                break
            split = _split_key(line.text)
            if split is None:
                raise self.error(line, f"expected 'key: value', got {line.text!r}")
            key, rest = split
            key = _unquote(key, self, line) if key[:1] in "\"'" else key
            if key in out:
                raise self.error(line, f"duplicate key {key!r}")
            self.i += 1
            out[key] = self.scalar(rest, line) if rest else self.nested(indent, allow_same=True)
        return out

    def nested(self, indent: int, *, allow_same: bool) -> Any:
        """The block under a key or dash (None when there is none)."""
        if self.i >= len(self.lines):
            return None
        nxt = self.lines[self.i]
        if nxt.indent > indent:
            return self.block(nxt.indent)
        if allow_same and nxt.indent == indent and (nxt.text.startswith("- ")
                                                    or nxt.text == "-"):
            return self.sequence(indent)
        return None

    def scalar(self, text: str, line: _Line) -> Any:
        if text[0] in "[{":
            value, end = _flow(text, 0, self, line)
            if text[end:].strip():
                raise self.error(line, f"unexpected text after {text[:end]!r}")
            return value
        return _plain(text, self, line)


def _split_key(text: str) -> tuple[str, str] | None:
    """``key: rest`` -> (key, rest); the colon must be followed by a space or the end."""
    quote = ""
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'" and i == 0:
            quote = ch
        elif ch == ":" and (i + 1 == len(text) or text[i + 1] in " \t"):
            return text[:i].strip(), text[i + 1:].strip()
        elif ch in "[{" and i == 0:
            return None
    return None


def _unquote(text: str, parser: _Parser, line: _Line) -> str:
    if text[0] == '"':
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            raise parser.error(line, f"bad double-quoted string {text!r}") from None
        if not isinstance(value, str):
            raise parser.error(line, f"bad double-quoted string {text!r}")
        return value
    if len(text) < 2 or text[-1] != "'":
        raise parser.error(line, f"unterminated string {text!r}")
    return text[1:-1].replace("''", "'")


def _plain(text: str, parser: _Parser, line: _Line) -> Any:
    text = text.strip()
    if text[:1] in "\"'":
        return _unquote(text, parser, line)
    if _INT.match(text):
        return int(text)
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("~", "null"):
        return None
    return text


def _scan(text: str, pos: int) -> tuple[str, int]:
    """A scalar token inside a flow collection, up to ',', ']' or '}' outside quotes."""
    start = pos
    quote = ""
    while pos < len(text):
        ch = text[pos]
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'" and not text[start:pos].strip():
            quote = ch
        elif ch in ",]}":
            break
        pos += 1
    return text[start:pos].strip(), pos


def _flow(text: str, pos: int, parser: _Parser, line: _Line) -> tuple[Any, int]:
    """A flow collection starting at ``text[pos]`` ('[' or '{'); returns (value, end)."""
    close = "]" if text[pos] == "[" else "}"
    items: list[Any] = []
    pairs: dict[str, Any] = {}
    pos += 1
    while True:
        while pos < len(text) and text[pos] in " ,":
            pos += 1
        if pos >= len(text):
            raise parser.error(line, f"missing {close!r}")
        if text[pos] == close:
            return (items if close == "]" else pairs), pos + 1
        if close == "]":
            if text[pos] in "[{":
                value, pos = _flow(text, pos, parser, line)
            else:
                token, pos = _scan(text, pos)
                value = _plain(token, parser, line)
            items.append(value)
            continue
        colon = re.compile(r":(\s|\Z)").search(text, pos)
        if colon is None or any(c in text[pos:colon.start()] for c in ",}"):
            raise parser.error(line, f"expected 'key: value' in {text!r}")
        key = text[pos:colon.start()].strip()
        pos = colon.end()
        while pos < len(text) and text[pos] == " ":
            pos += 1
        if pos < len(text) and text[pos] in "[{":
            pairs[key], pos = _flow(text, pos, parser, line)
        else:
            token, pos = _scan(text, pos)
            pairs[key] = _plain(token, parser, line) if token else None


def parse_yaml(text: str, source: str = "stubby.yml") -> Any:
    """Parse the YAML subset described in the module docstring."""
    lines = _lines(text, source)
    if not lines:
        return {}
    parser = _Parser(lines, source)
    if lines[0].text[0] in "[{":
        value = parser.scalar(lines[0].text, lines[0])
        parser.i = 1
    else:
        value = parser.block(lines[0].indent)
    if parser.i < len(lines):
        raise parser.error(lines[parser.i], "unexpected indentation or content")
    return value


# ------------------------------------------------------------------------ conversion

_SAME = ("listen_addresses", "round_robin_upstreams", "idle_timeout", "timeout",
         "tls_authentication", "tls_query_padding_blocksize", "tls_ca_file")
_DROPPED = {
    "resolution_type": "dnstls stub is always a stub resolver",
    "appdata_dir": "dnstls never fetches trust anchors (no Zero configuration DNSSEC, "
                   "RFC 7958): give dnssec_trust_anchors, else /usr/share/dns/root.key "
                   "or the built-in root keys are used",
    "trust_anchors_backoff_time": "dnstls never fetches trust anchors (RFC 7958)",
    "edns_client_subnet_private": "dnstls never forwards a client subnet, as with 1",
    "tls_connection_retries": "failed upstreams back off 1 s, doubling, up to 60 s",
    "tls_backoff_time": "failed upstreams back off 1 s, doubling, up to 60 s",
    "limit_outstanding_queries": "in flight: 100 per connection, 2 connections per upstream",
    "tls_ca_path": "use tls_ca_file (a bundle)",
    "tls_cipher_list": "dnstls uses Python's TLS 1.2+ defaults",
    "tls_ciphersuites": "dnstls uses Python's TLS 1.2+ defaults",
    "tls_min_version": "dnstls always requires TLS 1.2 or later",
    "tls_max_version": "dnstls negotiates the highest version both sides support",
    "log_level": "use dnstls -v / -vv",
}
_UPSTREAM_SAME = ("address_data", "tls_port", "tls_auth_name")
_DNSSEC = ("dnssec", "dnssec_return_status", "dnssec_trust_anchors")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(str(value))


def _transport_note(value: Any) -> str | None:
    items = value if isinstance(value, list) else [value]
    others = [str(v) for v in items if str(v) != "GETDNS_TRANSPORT_TLS"]
    if others:
        return (f"dns_transport_list: {', '.join(map(str, items))}: dnstls stub uses TLS only "
                "and never falls back to cleartext")
    return None


#: Stubby's (getdns') extension values of ``dnssec`` and ``dnssec_return_status``
_EXTENSION = {"GETDNS_EXTENSION_TRUE": True, "GETDNS_EXTENSION_FALSE": False}


def _dnssec(data: Mapping[str, Any], notes: list[str]) -> list[str]:
    """``dnssec`` and ``dnssec_return_status`` (either GETDNS_EXTENSION_TRUE: validation
    on) and ``dnssec_trust_anchors`` (a file, or a list of files)."""
    out: list[str] = []
    on = None
    for key in ("dnssec", "dnssec_return_status"):
        if key not in data:
            continue
        value = _EXTENSION.get(str(data[key]))
        if value is None:
            notes.append(f"{key}: {data[key]!r} (expected GETDNS_EXTENSION_TRUE or "
                         "GETDNS_EXTENSION_FALSE)")
        else:
            on = value if on is None else on or value
    if on is not None:
        out.append(f"dnssec = {_toml_value(on)}")
    if "dnssec_trust_anchors" in data:
        anchors = data["dnssec_trust_anchors"]
        files = [anchors] if isinstance(anchors, str) else anchors
        if isinstance(files, list) and files and all(isinstance(f, str) for f in files):
            out.append(f"dnssec_trust_anchors = {_toml_value(anchors)}")
        else:
            notes.append(f"dnssec_trust_anchors: {anchors!r} (dnstls reads trust anchors "
                         "from files only: give a file name or a list of them)")
    return out


def _upstream(index: int, item: Any, notes: list[str]) -> list[str]:
    path = f"upstream_recursive_servers[{index}]"
    if not isinstance(item, Mapping):
        raise ConfigError(path, "expected a mapping with address_data")
    out = ["", "[[upstream_recursive_servers]]"]
    for key in _UPSTREAM_SAME:
        if key in item:
            out.append(f"{key} = {_toml_value(item[key])}")
    if "tls_pubkey_pinset" in item:
        pins = item["tls_pubkey_pinset"]
        if not isinstance(pins, list):
            raise ConfigError(f"{path}.tls_pubkey_pinset", "expected a list")
        entries = []
        for j, pin in enumerate(pins):
            if not isinstance(pin, Mapping) or "value" not in pin:
                raise ConfigError(f"{path}.tls_pubkey_pinset[{j}]",
                                  "expected digest and value")
            entries.append({"digest": str(pin.get("digest", "sha256")),
                            "value": str(pin["value"])})
        out.append("tls_pubkey_pinset = [")
        out += [f"  {_toml_value(e)}," for e in entries]
        out.append("]")
    for key in sorted(set(item) - {*_UPSTREAM_SAME, "tls_pubkey_pinset"}):
        notes.append(f"{path}.{key}: {item[key]!r} (not supported per upstream)")
    return out


def convert(data: Any, *, source: str = "stubby.yml") -> str:
    """TOML text for ``dnstls stub`` equivalent to a parsed stubby.yml."""
    if not isinstance(data, Mapping):
        raise ConfigError(source, "expected a YAML mapping at the top level")
    notes: list[str] = []
    body: list[str] = []
    for key in _SAME:
        if key in data:
            body.append(f"{key} = {_toml_value(data[key])}")
    body += _dnssec(data, notes)
    for key, value in data.items():
        if key in _SAME or key in _DNSSEC or key == "upstream_recursive_servers":
            continue
        if key == "dns_transport_list":
            note = _transport_note(value)
            if note:
                notes.append(note)
        elif key in _DROPPED:
            notes.append(f"{key}: {value!r} ({_DROPPED[key]})")
        else:
            notes.append(f"{key}: {value!r} (unknown to dnstls)")
    servers = data.get("upstream_recursive_servers")
    if servers is not None:
        if not isinstance(servers, list):
            raise ConfigError("upstream_recursive_servers", "expected a list")
        for i, item in enumerate(servers):
            body += _upstream(i, item, notes)
    text = "\n".join(body) + "\n"
    header = [f"# dnstls stub configuration converted from {source}",
              "# by `dnstls stub --import-stubby`. Durations are in milliseconds, as in",
              "# Stubby. docs/stub.md lists the dnstls keys (strategy, [cache], metrics,",
              "# tls_pubkey_pinset_mode)."]
    problem = _validate(text)
    if problem:
        header.append(f"# WARNING: dnstls stub will refuse this file as it is: {problem}")
    tail = ["", "# Not carried over:"] + [f"#   {n}" for n in notes] if notes else []
    return "\n".join(header) + "\n\n" + text + ("\n".join(tail) + "\n" if tail else "")


def _validate(text: str) -> str | None:
    import tomllib

    from dnstls.stub_config import stub_config_from_data

    try:
        stub_config_from_data(tomllib.loads(text))
    except ConfigError as exc:
        return str(exc)
    except tomllib.TOMLDecodeError as exc:  # pragma: no cover - we wrote it
        return f"invalid TOML: {exc}"
    return None


def convert_file(path: str | Path) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("--import-stubby", f"cannot read {path}: {exc.strerror}") from None
    return convert(parse_yaml(text, source=str(path)), source=str(path))


__all__ = ["convert", "convert_file", "parse_yaml"]
