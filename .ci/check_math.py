#!/usr/bin/env python3
"""Fail when rustdoc's markdown mangles a KaTeX formula (Python 3 standard library only).

Run from the crate root after
    RUSTDOCFLAGS="--html-in-header katex-header.html" cargo doc --no-deps [--release]

Three checks:
1. Source lint: every `$...$` / `$$...$$` formula in a `///` or `//!` doc comment of `src/`
   must be markdown-inert (the convention in the crate docs' "Conventions" section): no
   backslash before ASCII punctuation (markdown eats it: `\\,` renders as `,`), no `*`, `~`,
   `'`, `"`, `--`, `...`, no `_` that can open emphasis (after punctuation or a space), no
   `<` or `>` against a letter. This also covers items that `cargo doc` does not render.
2. Rendered pages: the KaTeX header is injected into every page of the crate, and its
   auto-render pass, simulated on the HTML text nodes (same delimiters and ignored tags as
   the header, `$` inside code is not math), finds only formulas that are verbatim copies of
   a source formula (whitespace runs compared as one space) and leaves no unpaired `$`.
   A formula broken by `<em>`, `<sub>`, `<code>`, a link or a lost backslash fails here.
3. Coverage: source formulas found on no page are listed with -v (`cargo doc` leaves out
   private items), and at least --min-rendered of them must be on some page, so the check
   cannot pass by finding nothing.
"""

import argparse
import html
import html.parser
import os
import re
import sys
import unicodedata
from collections import defaultdict

DOC_LINE = re.compile(r"^\s*//(/|!)(?![/!])(.*)$")
FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
AMS = re.compile(r"^\\begin\{")


def is_punct(ch):
    """CommonMark's punctuation: ASCII punctuation or a Unicode P*/S* character."""
    if ch == "":
        return False
    if ch.isascii():
        return not ch.isalnum() and not ch.isspace() and ch.isprintable()
    return unicodedata.category(ch)[0] in "PS"


def header_config(path):
    """The auto-render delimiters and ignored tags the header configures."""
    text = open(path, encoding="utf-8").read()
    delims = []
    for left, right, display in re.findall(
        r'left:\s*"((?:[^"\\]|\\.)*)",\s*right:\s*"((?:[^"\\]|\\.)*)",\s*display:\s*(true|false)',
        text,
    ):
        unesc = lambda s: re.sub(r"\\(.)", r"\1", s)
        delims.append((unesc(left), unesc(right), display == "true"))
    m = re.search(r"ignoredTags:\s*\[([^\]]*)\]", text)
    ignored = set(re.findall(r'"([a-z]+)"', m.group(1))) if m else {
        "script", "noscript", "style", "textarea", "pre", "code", "option"}
    if not delims:
        sys.exit(f"check_math: no auto-render delimiters found in {path}")
    return text, delims, ignored


def find_end(delim, text, start):
    """KaTeX auto-render's findEndOfMath: skips escaped characters and braced groups."""
    i, level = start, 0
    while i < len(text):
        c = text[i]
        if level <= 0 and text.startswith(delim, i):
            return i
        if c == "\\":
            i += 1
        elif c == "{":
            level += 1
        elif c == "}":
            level -= 1
        i += 1
    return -1


def split_math(text, delims, offsets=None):
    """KaTeX auto-render's splitAtDelimiters: ([formulas], [text pieces left over]); the
    offset of each formula in `text` is appended to `offsets` when given."""
    lefts = re.compile("|".join(re.escape(l) for l, _, _ in delims))
    maths, rest, base = [], [], 0
    while True:
        m = lefts.search(text)
        if not m:
            break
        rest.append(text[: m.start()])
        base += m.start()
        text = text[m.start():]
        left, right, display = next(d for d in delims if text.startswith(d[0]))
        end = find_end(right, text, len(left))
        if end == -1:
            break
        raw = text[: end + len(right)]
        maths.append(raw if AMS.match(raw[len(left):]) else text[len(left): end])
        if offsets is not None:
            offsets.append(base)
        base += end + len(right)
        text = text[end + len(right):]
    rest.append(text)
    return maths, rest


def norm(tex):
    return re.sub(r"\s+", " ", tex).strip()


# ---------------------------------------------------------------------------- source side

def doc_blocks(path):
    """Consecutive `///` or `//!` lines: (first line number, [(line number, text)])."""
    blocks, cur, kind = [], [], None
    for no, line in enumerate(open(path, encoding="utf-8"), 1):
        m = DOC_LINE.match(line.rstrip("\n"))
        if m and (not cur or m.group(1) == kind):
            cur.append((no, m.group(2)))
            kind = m.group(1)
            continue
        if cur:
            blocks.append(cur)
        cur, kind = ([(no, m.group(2))], m.group(1)) if m else ([], None)
    if cur:
        blocks.append(cur)
    return blocks


def prose_segments(block):
    """Markdown text outside code blocks and code spans, as (line-of-offset function, text)
    pieces that become separate HTML text runs (a code span ends one run, starts the next)."""
    paras, para, fence = [], [], None
    for no, text in block:
        m = FENCE.match(text)
        if fence:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = None
            continue
        if m:
            fence = m.group(1)
            if para:
                paras.append(para)
            para = []
        elif text.strip():
            para.append((no, text))
        elif para:
            paras.append(para)
            para = []
    if para:
        paras.append(para)
    for para in paras:
        text = "\n".join(t for _, t in para)
        starts = [0]
        for _, t in para:
            starts.append(starts[-1] + len(t) + 1)
        line_of = lambda off, para=para, starts=starts: para[
            max(i for i, s in enumerate(starts[:-1]) if s <= off)][0]
        pos, seg_start = 0, 0
        while pos < len(text):
            if text[pos] == "\\":
                pos += 2
                continue
            if text[pos] != "`":
                pos += 1
                continue
            run = re.match(r"`+", text[pos:]).group(0)
            close = re.compile(r"(?<!`)" + run + r"(?!`)")
            m = close.search(text, pos + len(run))
            if not m:
                pos += len(run)
                continue
            yield (lambda off, s=seg_start: line_of(s + off)), text[seg_start:pos]
            pos = seg_start = m.end()
        yield (lambda off, s=seg_start: line_of(s + off)), text[seg_start:]


def lint(tex):
    """Why markdown would change this formula, or [] when it passes through verbatim."""
    problems = []
    for m in re.finditer(r"\\+", tex):
        nxt = tex[m.end(): m.end() + 1]
        if len(m.group(0)) % 2 == 0 or (nxt.isascii() and is_punct(nxt)):
            problems.append(f"`{m.group(0)}{nxt}` (markdown drops a backslash)")
    for i, c in enumerate(tex):
        prev = tex[i - 1] if i else " "
        nxt = tex[i + 1] if i + 1 < len(tex) else " "
        if c == "_" and prev != "\\" and (prev.isspace() or is_punct(prev)) and not nxt.isspace():
            problems.append(f"`{prev}_{nxt}` (can open emphasis; put `_` right after a letter or digit)")
        elif c in "*~\"'":
            problems.append(f"`{c}` (emphasis/strikethrough/smart quotes; use \\ast, \\sim, ^\\prime)")
        elif c in "<>" and (nxt.isalpha() or nxt in "/!?" or prev.isalpha()):
            problems.append(f"`{prev}{c}{nxt}` (looks like HTML; put spaces around < and >)")
    if "--" in tex or "..." in tex:
        problems.append("`--` or `...` (smart punctuation; use \\dots)")
    level = 0
    for m in re.finditer(r"\\.|[{}]", tex):
        level += {"{": 1, "}": -1}.get(m.group(0), 0)
        if level < 0:
            break
    if level != 0:
        problems.append("unbalanced braces")
    return problems


def source_formulas(src, delims):
    found = []  # (normalised tex, file, line, raw tex)
    for root, _, files in os.walk(src):
        for name in sorted(files):
            if not name.endswith(".rs"):
                continue
            path = os.path.join(root, name)
            for block in doc_blocks(path):
                for line_of, seg in prose_segments(block):
                    offsets = []
                    maths, _ = split_math(seg, delims, offsets)
                    for tex, off in zip(maths, offsets):
                        found.append((norm(tex), path, line_of(off), tex))
    return found


# ---------------------------------------------------------------------------- HTML side

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
        "source", "track", "wbr"}


class TextRuns(html.parser.HTMLParser):
    """The text-node runs of <body> that auto-render visits (adjacent text merged)."""

    def __init__(self, ignored):
        super().__init__(convert_charrefs=True)
        self.ignored, self.stack, self.runs, self.cur, self.in_body = ignored, [], [], [], False

    def flush(self):
        if self.cur:
            self.runs.append("".join(self.cur))
            self.cur = []

    def handle_starttag(self, tag, attrs):
        self.flush()
        if tag == "body":
            self.in_body = True
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.flush()

    def handle_endtag(self, tag):
        self.flush()
        if tag in self.stack:
            while self.stack.pop() != tag:
                pass

    def handle_comment(self, data):
        self.flush()

    def handle_data(self, data):
        if self.in_body and not any(t in self.ignored for t in self.stack):
            self.cur.append(data)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", default="src")
    ap.add_argument("--doc", default="target/doc", help="the cargo doc output directory")
    ap.add_argument("--crate", default="candle_tricks")
    ap.add_argument("--header", default="katex-header.html")
    ap.add_argument("--min-rendered", type=float, default=0.8,
                    help="fraction of the distinct source formulas that must be on some page "
                         "(the rest: docs of private items; 1.0 with --document-private-items)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()

    header, delims, ignored = header_config(args.header)
    errors = []

    # 1. Source lint.
    src = source_formulas(args.src, delims)
    by_tex = defaultdict(list)
    n_lint = 0
    for tex, path, line, raw in src:
        by_tex[tex].append(f"{path}:{line}")
        for p in lint(raw):
            errors.append(f"{path}:{line}: ${norm(raw)}$: {p}")
            n_lint += 1

    # 2. Rendered pages.
    pages = []
    for root, _, files in os.walk(os.path.join(args.doc, args.crate)):
        pages += [os.path.join(root, f) for f in files if f.endswith(".html")]
    if not pages:
        sys.exit(f"check_math: no pages under {args.doc}/{args.crate}: run cargo doc first")
    marker = "renderMathInElement"
    n_header = n_mangled = n_stray = 0
    rendered = defaultdict(set)
    for page in sorted(pages):
        text = open(page, encoding="utf-8").read()
        if '<meta http-equiv="refresh"' in text:
            continue  # rustdoc's redirect stubs
        rel = os.path.relpath(page, args.doc)
        if marker not in text or "katex" not in text:
            n_header += 1
            errors.append(f"{rel}: KaTeX header not injected (RUSTDOCFLAGS=\"--html-in-header "
                          f"{args.header}\")")
        parser = TextRuns(ignored)
        parser.feed(text)
        parser.close()
        parser.flush()
        for run in parser.runs:
            maths, rest = split_math(run, delims)
            for tex in maths:
                if norm(tex) in by_tex:
                    rendered[norm(tex)].add(rel)
                else:
                    n_mangled += 1
                    errors.append(f"{rel}: formula not in the sources (mangled?): ${norm(tex)}$")
            for piece in rest:
                if "$" in piece:
                    n_stray += 1
                    errors.append(f"{rel}: unpaired `$` (a formula split by markup?): "
                                  f"{norm(piece)[:160]!r}")

    # 3. Coverage.
    missing = sorted({t for t, *_ in src} - set(rendered))
    for tex in missing:
        if args.verbose:
            print(f"note: not on any page: ${tex}$ ({', '.join(by_tex[tex][:3])})")
    if len(missing) > (1 - args.min_rendered) * len(by_tex):
        errors.append(f"{len(missing)} of {len(by_tex)} distinct source formulas are on no page "
                      f"(--min-rendered {args.min_rendered}); run with -v to list them")

    for e in errors:
        print(e)
    distinct = len(by_tex)
    print(f"check_math: {len(src)} formulas ({distinct} distinct) in {args.src}, "
          f"{len(pages)} pages; lint errors {n_lint}, pages without header {n_header}, "
          f"mangled formulas {n_mangled}, unpaired $ {n_stray}, "
          f"distinct formulas on no page {len(missing)}")
    if errors:
        print("check_math: FAILED (see the Conventions section of src/lib.rs)")
        return 1
    print("check_math: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
