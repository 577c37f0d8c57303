"""An agent using `requests` through the proxy (HTTP_PROXY / HTTPS_PROXY).

Against `airlock dev`, after pasting its export lines:
    python3 examples/python/requests_proxy.py
`requests` reads HTTP_PROXY/HTTPS_PROXY and REQUESTS_CA_BUNDLE (the Airlock CA merged with
the system roots) from the environment; nothing Airlock-specific is in the code.
"""
import json
import os

import requests

url = os.environ.get("AIRLOCK_DEMO_URL", "http://demo.airlock.local/echo")
response = requests.get(url, headers={"Authorization": "Bearer {{secret:demo/api-key}}"}, timeout=10)
print(response.status_code)
print(json.dumps(response.json(), indent=2, sort_keys=True))
