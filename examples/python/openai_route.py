"""An agent using the openai SDK in route mode: no CA setup, the SDK just talks to a base URL.

Against `airlock dev`:  AIRLOCK_PROXY=http://127.0.0.1:7879 python3 examples/python/openai_route.py
The API key is a placeholder; the proxy puts the real one in toward the route's upstream
and replaces it with the placeholder again in anything that comes back.
"""
import os

import openai

proxy = os.environ.get("AIRLOCK_PROXY", "http://127.0.0.1:7879")
route = os.environ.get("AIRLOCK_ROUTE", "demo")
client = openai.OpenAI(
    base_url=f"{proxy}/r/{route}",
    api_key=os.environ.get("OPENAI_API_KEY", "{{secret:demo/api-key}}"),
    max_retries=0,
)
reply = client.chat.completions.create(model="airlock-demo", messages=[{"role": "user", "content": "hello"}])
print(reply.choices[0].message.content)
