"""The ``report`` command: what a job's output says, as text and as a self-contained HTML page.

``stats.py`` streams the rows into counters, histograms and the review gallery
(``gallery.py``); ``facts.py`` reads the job's settings; ``text.py`` and ``html.py`` (with
``charts.py`` for the inline SVG and ``thumbnails.py`` for the embedded images) render them,
and ``html.py`` writes the page (never over a file that is not one); ``command.py`` is the CLI
entry point.
"""

from .command import register

__all__ = ["register"]
