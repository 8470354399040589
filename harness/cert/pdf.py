"""An A4 PDF of a certificate page, rendered by WeasyPrint (an optional dependency).

WeasyPrint lays out the page's own ``@page`` CSS and embeds the fonts it uses
(a CJK font such as Noto Sans CJK must be installed for the Chinese text). It
needs the Pango library: on Debian ``apt-get install libpango-1.0-0
libpangoft2-1.0-0``.
"""

from __future__ import annotations

from pathlib import Path


class PdfError(Exception):
    """The PDF cannot be made here; the message says what to install."""


def write_pdf(html_text: str, output: Path) -> None:
    try:
        import weasyprint
    except ImportError as exc:
        raise PdfError(f"PDF output needs weasyprint ({exc}); pip install 'shipei[pdf]'") \
            from None
    except OSError as exc:  # weasyprint is installed but Pango is not
        raise PdfError(f"weasyprint cannot load its system libraries ({exc}); on Debian: "
                       "apt-get install libpango-1.0-0 libpangoft2-1.0-0") from None
    output.parent.mkdir(parents=True, exist_ok=True)
    weasyprint.HTML(string=html_text).write_pdf(str(output))
