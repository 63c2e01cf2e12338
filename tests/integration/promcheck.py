#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
# A strict reader of the Prometheus text exposition format (0.0.4), for
# the tests of Ferry's metrics files where promtool is not installed (and
# beside it where it is): every line is a HELP, a TYPE or a sample; names
# and label names follow the format's grammar; label values use only the
# \\, \" and \n escapes; values are floats as Prometheus parses them; a
# family's HELP and TYPE come once, before its samples, and its samples
# are together; no series appears twice. Ferry's own conventions on top:
# every family has HELP and TYPE, counters end in _total and never go
# negative, names start with ferry_. Prints each sample as
# name{label="value",...} value with the labels sorted, or exits 1 with
# the line that broke a rule.
import math
import re
import sys

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
FLOAT = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|Inf|inf|NaN|nan)")
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


def die(lineno, line, why):
    print(f"line {lineno}: {why}: {line!r}", file=sys.stderr)
    sys.exit(1)


def parse_labels(s, lineno, line):
    """s starts after '{'; returns (labels, rest after '}')."""
    labels = {}
    i = 0
    while True:
        if s[i:i + 1] == "}":
            return labels, s[i + 1:]
        m = LABEL.match(s, i)
        if not m:
            die(lineno, line, "bad label name")
        name = m.group(0)
        if name.startswith("__"):
            die(lineno, line, "reserved label name")
        if name in labels:
            die(lineno, line, "label given twice")
        i = m.end()
        if s[i:i + 2] != '="':
            die(lineno, line, "label without =\"")
        i += 2
        value = []
        while True:
            if i >= len(s):
                die(lineno, line, "unterminated label value")
            c = s[i]
            if c == "\\":
                e = s[i + 1:i + 2]
                if e not in ("\\", '"', "n"):
                    die(lineno, line, "bad escape in a label value")
                value.append("\n" if e == "n" else e)
                i += 2
            elif c == '"':
                i += 1
                break
            elif c == "\n":
                die(lineno, line, "raw newline in a label value")
            else:
                value.append(c)
                i += 1
        labels[name] = "".join(value)
        if s[i:i + 1] == ",":
            i += 1
        elif s[i:i + 1] != "}":
            die(lineno, line, "labels not separated by ,")


def family_of(name, types):
    for suffix in ("_bucket", "_count", "_sum"):
        base = name[: -len(suffix)] if name.endswith(suffix) else None
        if base and types.get(base) in ("histogram", "summary"):
            return base
    return name


def main(path):
    data = open(path, "rb").read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        die(0, "", "not UTF-8")
    if text and not text.endswith("\n"):
        die(0, text[-40:], "no newline at the end")
    helps, types, done, series, out = {}, {}, set(), set(), []
    current = None
    for lineno, line in enumerate(text.split("\n")[:-1], 1):
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                if not NAME.fullmatch(name):
                    die(lineno, line, "bad metric name")
                if name in done:
                    die(lineno, line, "family comes back after its samples")
                if current and current != name:
                    done.add(current)
                current = name
                table = helps if parts[1] == "HELP" else types
                if name in table:
                    die(lineno, line, parts[1] + " given twice")
                if parts[1] == "TYPE":
                    if len(parts) != 4 or parts[3] not in TYPES:
                        die(lineno, line, "bad TYPE")
                    types[name] = parts[3]
                else:
                    h = parts[3] if len(parts) == 4 else ""
                    if re.search(r"\\[^\\n]", h.replace("\\\\", "")):
                        die(lineno, line, "bad escape in HELP")
                    helps[name] = h
            continue
        if not line.strip():
            die(lineno, line, "blank line")
        m = NAME.match(line)
        if not m:
            die(lineno, line, "bad metric name")
        name = m.group(0)
        rest = line[m.end():]
        labels = {}
        if rest.startswith("{"):
            labels, rest = parse_labels(rest[1:], lineno, line)
        fields = rest.split(" ")
        if fields[0] != "" or len(fields) not in (2, 3):
            die(lineno, line, "not NAME[{LABELS}] VALUE [TIMESTAMP]")
        if not FLOAT.fullmatch(fields[1]):
            die(lineno, line, "bad value")
        value = float(fields[1].replace("Inf", "inf"))
        if len(fields) == 3 and not re.fullmatch(r"-?\d+", fields[2]):
            die(lineno, line, "bad timestamp")
        fam = family_of(name, types)
        if fam in done:
            die(lineno, line, "family's samples not together")
        if current and current != fam:
            done.add(current)
        current = fam
        if fam not in helps or fam not in types:
            die(lineno, line, "sample without HELP and TYPE")
        if not fam.startswith("ferry_"):
            die(lineno, line, "not a ferry_ metric")
        if types[fam] == "counter":
            if not fam.endswith("_total"):
                die(lineno, line, "counter not named *_total")
            if math.isnan(value) or value < 0:
                die(lineno, line, "counter below zero")
        key = name
        if labels:
            key += "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
        if key in series:
            die(lineno, line, "series given twice")
        series.add(key)
        out.append(f"{key} {fields[1]}")
    for name in types:
        if name not in helps:
            die(0, name, "TYPE without HELP")
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1])
