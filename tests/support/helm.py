"""Lints and renders the chart offline with Helm's SDK (helm-python-sdk).

Usage: helm.py CHART VALUES_JSON  -> prints {"lint": ..., "manifests": {...}}
       or {"error": "..."} when the values are rejected or rendering fails."""
import json
import sys

from helm_python.chart import Chart, lint

chart_dir, values = sys.argv[1], json.loads(sys.argv[2])
try:
    chart = Chart.load(chart_dir)
    chart.validate_schema(values)
    report = lint(chart_dir, values, strict=True, namespace="kube-system")
    manifests = chart.render(values, name="csi-provider-aws", namespace="kube-system", is_install=True)
    print(json.dumps({"lint": report, "manifests": manifests}))
except Exception as e:  # the SDK's typed errors: values, render
    print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
