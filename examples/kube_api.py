"""A local stand-in for the Kubernetes API with the objects the provider
reads: the pod's ServiceAccount (with its IRSA role annotation), the pod,
and its node (with the region label). Usage: kube_api.py PORT"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OBJECTS = {
    "/api/v1/namespaces/shop/serviceaccounts/orders-api": {
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "orders-api", "namespace": "shop", "annotations": {
            "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/orders-api"}}},
    "/api/v1/namespaces/shop/pods/orders-api-7d9f": {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "orders-api-7d9f", "namespace": "shop"},
        "spec": {"nodeName": "ip-10-0-1-23.us-west-2.compute.internal",
                 "containers": [{"name": "app", "image": "busybox"}]}},
    "/api/v1/nodes/ip-10-0-1-23.us-west-2.compute.internal": {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "ip-10-0-1-23.us-west-2.compute.internal",
                     "labels": {"topology.kubernetes.io/region": "us-west-2"}}},
}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        obj = OBJECTS.get(self.path.split("?")[0])
        status = 200 if obj else 404
        body = obj or {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                       "reason": "NotFound", "code": 404, "message": f"{self.path} not found"}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        sys.stderr.write("kube-api: " + fmt % args + "\n")


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
