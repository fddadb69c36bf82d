"""The HTML report's stylesheet: system fonts, one accent, amber for unsure, red for failed."""

CSS = """
:root{--ink:#1d2430;--muted:#6b7785;--line:#e6e9ee;--bg:#f6f7f9;--card:#fff;
--accent:#3867d6;--unsure:#f5a524;--bad:#d64545;--good:#2f9e6e}
*{box-sizing:border-box}
html{background:var(--bg)}
body{margin:0;color:var(--ink);font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,
"Helvetica Neue",Arial,sans-serif;-webkit-font-smoothing:antialiased}
main{max-width:1120px;margin:0 auto;padding:40px 28px 56px}
header h1{font-size:30px;line-height:1.2;margin:2px 0 6px;letter-spacing:-.01em;
word-break:break-all}
.eyebrow{margin:0;color:var(--accent);font-size:12px;font-weight:600;letter-spacing:.08em;
text-transform:uppercase}
.sub{margin:0;color:var(--muted)}
.cards{display:grid;grid-template-columns:repeat(4,minmax(0,1fr));gap:12px;
margin:26px 0 14px}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:12px 14px;
display:flex;flex-direction:column;gap:2px;min-width:0}
.card .k{font-size:12px;color:var(--muted);text-transform:uppercase;letter-spacing:.05em}
.card .v{font-size:22px;font-weight:650;font-variant-numeric:tabular-nums;
overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.card.long .v{font-size:17px;line-height:1.6}
.card .note{font-size:12.5px;color:var(--muted)}
.card.good .v{color:var(--good)}.card.bad .v{color:var(--bad)}.card.warn .v{color:#b7791f}
nav{display:flex;flex-wrap:wrap;gap:6px;margin:0 0 8px;position:sticky;top:0;z-index:2;
padding:10px 0;background:var(--bg)}
nav a{color:var(--ink);text-decoration:none;font-size:13.5px;padding:5px 12px;
border:1px solid var(--line);border-radius:999px;background:var(--card)}
nav a:hover{border-color:var(--accent);color:var(--accent)}
section{background:var(--card);border:1px solid var(--line);border-radius:12px;
padding:22px 24px;margin:16px 0}
section.cards{background:none;border:0;padding:0}
h2{font-size:19px;margin:0 0 4px}
h3{font-size:15px;margin:22px 0 10px}
h3 span{font-weight:400;color:var(--muted);font-size:13px;margin-left:6px}
.lede{margin:0 0 16px;color:var(--muted);font-size:14px}
.figure{overflow-x:auto}
svg.chart{display:block;max-width:100%;height:auto}
.multiple svg.chart{width:100%}
svg text{font:12.5px system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;fill:var(--ink)}
svg text.num{fill:var(--muted);font-variant-numeric:tabular-nums}
svg text.tick{fill:var(--muted);font-size:11px}
svg text.cell{font-size:11px}
.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin:0 5px 0 2px;
vertical-align:0}
.swatch.unsure{background:var(--unsure)}
.multiples{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:14px 18px;
margin-top:18px}
.multiple .mt{display:flex;justify-content:space-between;gap:8px;font-size:13px;margin-bottom:2px}
.multiple .mt span{color:var(--muted);white-space:nowrap}
.multiple .mt b{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.legend{display:flex;flex-wrap:wrap;gap:4px 14px;font-size:13px;margin:0 0 12px;
color:var(--muted)}
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:5px}
.group h3:first-child{margin-top:4px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(168px,1fr));gap:12px}
.thumb.remote{font-size:11.5px;color:var(--muted);text-align:center}
figure.review{margin:0;border:1px solid var(--line);border-radius:9px;overflow:hidden;
background:var(--card);display:flex;flex-direction:column}
.thumb,.ph{width:100%;height:150px;object-fit:contain;display:block;
background:repeating-conic-gradient(#f1f3f6 0 25%,#fafbfc 0 50%) 0 0/16px 16px}
.ph{display:flex;align-items:center;justify-content:center;color:var(--muted);font-size:12.5px;
background:#f1f3f6;border-bottom:1px dashed var(--line)}
figcaption{padding:8px 10px 10px;font-size:12.5px;display:flex;flex-direction:column;gap:5px}
.fn{font-weight:600;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.scores{list-style:none;margin:0;padding:0;display:flex;flex-direction:column;gap:2px}
.scores li{display:grid;grid-template-columns:1fr 52px 32px;gap:6px;align-items:center;
color:var(--muted)}
.scores li.on{color:var(--ink);font-weight:600}
.scores li span{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.scores b{font-weight:500;text-align:right;font-variant-numeric:tabular-nums}
.bar{display:block;height:6px;border-radius:3px;background:var(--line);overflow:hidden}
.bar i{display:block;height:100%;background:#9aa5b4}
.scores li.on .bar i{background:var(--accent)}
@media (max-width:700px){.cards{grid-template-columns:repeat(2,minmax(0,1fr))}}
.margin{color:var(--muted);font-size:12px}
table.errors{width:100%;border-collapse:collapse;font-size:13.5px}
.errors th{text-align:left;font-size:12px;text-transform:uppercase;letter-spacing:.05em;
color:var(--muted);font-weight:600;border-bottom:1px solid var(--line);padding:6px 10px}
.errors td{border-bottom:1px solid var(--line);padding:10px;vertical-align:top}
.errors td code{font-size:12.5px;word-break:break-all}
.errors .n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.errors .msg{color:var(--muted);font-size:12.5px;margin-top:4px}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.92em}
.empty{color:var(--muted)}
footer{color:var(--muted);font-size:12.5px;margin-top:28px;word-break:break-all}
"""
