#!/usr/bin/env python3
"""Writes a large instance for benchmarks: TABLES registered tables (default 5000) over 50 csv sources
in 100 registry files, TRANSFORMS transforms (default 100, two per source at most) and METRICS metrics
(default 50).

    scripts/gen-bench-instance.py DIR [TABLES [TRANSFORMS [METRICS]]]
"""
import os, sys
root = sys.argv[1]
n, transforms, metrics = ([int(a) for a in sys.argv[2:5]] + [5000, 100, 50][len(sys.argv[2:5]):])
sources, files = 50, 100
def w(rel, text):
    p = os.path.join(root, rel); os.makedirs(os.path.dirname(p), exist_ok=True); open(p, "w").write(text)
w("config/instance.yaml", "name: Bench\ntimezone: Europe/Prague\n")
os.makedirs(os.path.join(root, "files"), exist_ok=True)
for s in range(sources):
    t = "".join(f"  - name: model_{s}_{k}\n    sql: |\n      select a.id, count(*) as n\n      from t_{s * (n // sources) + k} a\n      join t_{s * (n // sources) + k + 1} b using (id)\n      group by 1\n" for k in range(2) if s * 2 + k < transforms)
    block = "transforms:\n" + t if t else ""
    w(f"pipelines/src_{s}.yaml", f"type: csv\nconnection:\n  path: files\nschedule: every 15m\n{block}")
per_file = n // files
for f in range(files):
    rows = []
    for i in range(f * per_file, (f + 1) * per_file):
        rows.append(f"  - source: src_{i // (n // sources)}\n    source_table: t_{i}\n    description: Table number {i}\n"
                    f"    schedule: \"*/30 * * * *\"\n    sync: {{ mode: incremental, cursor: updated_at, primary_key: [id] }}\n"
                    f"    columns: {{ id: Identifier, updated_at: Last change }}\n    access: [analysts]\n")
    w(f"registry/part_{f:03}.yaml", "tables:\n" + "".join(rows))
for m in range(metrics):
    w(f"metrics/cat_{m % 5}/metric_{m}.yaml",
      f"description: Metric {m}\nowner: a@b.c\ngrain: [day, month]\nsql: |\n  select date_trunc('{{{{ grain }}}}', updated_at) as period, count(*) as value\n  from t_{m}\n  group by 1\n")
