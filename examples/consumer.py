"""A complete webhook consumer: verifies each request with the Standard Webhooks library and
answers 204, or 400 when it does not verify (a 4xx: the service does not retry it).

    pip install standardwebhooks
    WEBHOOK_SECRET=whsec_... PORT=9000 python examples/consumer.py
"""

import os
from http.server import BaseHTTPRequestHandler, HTTPServer

from standardwebhooks import Webhook, WebhookVerificationError

webhook = Webhook(os.environ["WEBHOOK_SECRET"])  # the whsec_... secret of the endpoint


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        try:
            payload = webhook.verify(body, dict(self.headers))  # checks signature and timestamp
        except WebhookVerificationError as exc:
            print("REJECTED:", exc, flush=True)
            self.send_response(400)
        else:
            print("verified", self.headers["webhook-id"], payload, flush=True)
            self.send_response(204)
        self.end_headers()


port = int(os.environ.get("PORT", "9000"))
print(f"listening on http://127.0.0.1:{port}/", flush=True)
HTTPServer(("127.0.0.1", port), Handler).serve_forever()
