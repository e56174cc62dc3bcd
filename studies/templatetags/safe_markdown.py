"""`{{ text|safe_markdown }}`: Markdown for untrusted text (model output, prompts, consent forms).

markdown-it-py with raw HTML disabled escapes every tag in the source, so no `<script>` or event
handler can reach the page. Links are kept only for http, https and mailto URLs (no
`javascript:`, `data:` or relative links), open in a new tab without an opener, and carry
`rel="nofollow"`. Images are not rendered: a response must not load third-party content into
the annotator's browser.
"""

from __future__ import annotations

from functools import cache
from urllib.parse import urlsplit

from django import template
from django.utils.safestring import SafeString, mark_safe

register = template.Library()

ALLOWED_SCHEMES = {"http", "https", "mailto"}


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
    return md


def render_safe_markdown(text: str) -> str:
    """HTML for `text`, with every tag from the source escaped."""
    return _renderer().render(text or "")


@register.filter(name="safe_markdown")
def safe_markdown(text: str) -> SafeString:
    return mark_safe(render_safe_markdown(str(text)))  # escaped by markdown-it: html is disabled
