"""`{{ text|safe_markdown }}`: Markdown for untrusted text (model output, prompts, consent forms).

markdown-it-py with raw HTML disabled escapes every tag in the source, so no `<script>` or event
handler can reach the page. Links are kept only for http, https and mailto URLs (no
`javascript:`, `data:` or relative links), open in a new tab without an opener, and carry
`rel="nofollow"`. Images are not rendered: a response must not load third-party content into
the annotator's browser.

Candidates keep their rendered text (`Candidate.text_html`, issue #14), so a task page does not
render Markdown per request: `versioned_html` renders with a version mark, `candidate_markdown`
shows the stored HTML while its mark is current and renders afresh otherwise. Bump
`RENDER_VERSION` whenever the renderer changes: every stored text is then rendered again (and
stored again on its next display, `studies.judgment.assign.shown_in_order`).
"""

from __future__ import annotations

from functools import cache, lru_cache
from urllib.parse import urlsplit

from django import template
from django.utils.safestring import SafeString, mark_safe

register = template.Library()

ALLOWED_SCHEMES = {"http", "https", "mailto"}
RENDER_VERSION = 2  # 2: table alignment as classes (CSP, #25)
VERSION_MARK = f"<!-- safe_markdown v{RENDER_VERSION} -->"
# Texts up to this length are kept rendered in each process (the prompts of a task page).
MEMO_MAX_CHARS = 20_000


def _is_safe_link(url: str) -> bool:
    # markdown-it normalises (percent-encodes) the URL before validation; reject anything whose
    # scheme isn't allow-listed, including scheme-less (relative) links.
    scheme = urlsplit(url.strip()).scheme.lower()
    return scheme in ALLOWED_SCHEMES


@cache
def _renderer():
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])
    md.disable(["image"])
    md.validateLink = _is_safe_link  # type: ignore[method-assign]  # markdown-it-py's documented hook

    def render_link_open(self, tokens, idx, options, env):
        tokens[idx].attrSet("rel", "nofollow noopener noreferrer")
        tokens[idx].attrSet("target", "_blank")
        return self.renderToken(tokens, idx, options, env)

    md.add_render_rule("link_open", render_link_open)
    md.add_render_rule("th_open", _render_cell_open)
    md.add_render_rule("td_open", _render_cell_open)
    return md


def _render_cell_open(self, tokens, idx, options, env):
    """A table cell's alignment as a class, not markdown-it's `style="text-align:…"`: the pages'
    Content-Security-Policy refuses inline styles, so each aligned cell logged a violation (#25)."""
    token = tokens[idx]
    style = token.attrs.pop("style", None)
    if isinstance(style, str) and style.startswith("text-align:"):
        token.attrSet("class", "align-" + style.removeprefix("text-align:").strip())
    return self.renderToken(tokens, idx, options, env)


def render_safe_markdown(text: str) -> str:
    """HTML for `text`, with every tag from the source escaped."""
    if len(text or "") <= MEMO_MAX_CHARS:
        return _render_memo(text or "")
    return _renderer().render(text)


@lru_cache(maxsize=256)
def _render_memo(text: str) -> str:
    return _renderer().render(text)


def versioned_html(text: str) -> str:
    """`render_safe_markdown(text)` with the renderer's version mark, for storing."""
    return VERSION_MARK + render_safe_markdown(text)


def is_current_html(html: str) -> bool:
    """Whether stored HTML came from this version of the renderer (else render the text again)."""
    return html.startswith(VERSION_MARK)


@register.filter(name="safe_markdown")
def safe_markdown(text: str) -> SafeString:
    return mark_safe(render_safe_markdown(str(text)))  # escaped by markdown-it: html is disabled


@register.filter(name="candidate_markdown")
def candidate_markdown(candidate) -> SafeString:
    """A candidate's text as safe Markdown: its stored rendering when current, else rendered now."""
    html = candidate.text_html
    if not is_current_html(html):
        html = versioned_html(candidate.text)
    return mark_safe(html)  # produced by versioned_html: markdown-it with html disabled
