"""A real OAuth2 authorization server and resource server for tests/it/oauth2.rs.

Authlib's Flask AuthorizationServer issues tokens with the client credentials grant to one
registered client; a ResourceProtector checks them on the resource endpoints. Served over
TLS (the test CA's certificate) and over plain HTTP, each on a port of its own, both written
to a file ("TLS_PORT PLAIN_PORT").

usage: oauth2_server.py PORT_FILE CERT KEY CLIENT_ID CLIENT_SECRET EXPIRES_IN

Endpoints:
  POST /oauth/token        the token endpoint (client_secret_basic or client_secret_post)
  ANY  /v1/whoami          protected: 200 {"ok", "client", "scope", "body"}
  GET  /v1/echo            protected: sends the bearer token back in a header and the body
  GET  /v1/denied          always 401 (a token the upstream never takes)
  GET  /_test/stats        {"issued": n, "tokens": [...], "hits": {path: n}, "auth": [...]}
  POST /_test/revoke       revokes every token issued so far
"""

import json
import os
import secrets
import ssl
import sys
import threading
import time

from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector
from authlib.oauth2.rfc6749 import ClientMixin, TokenMixin, grants
from authlib.oauth2.rfc6750 import BearerTokenValidator
from flask import Flask, jsonify, request
from werkzeug.serving import make_server

port_file, cert, key, client_id, client_secret, expires_in = sys.argv[1:7]
expires_in = int(expires_in)

lock = threading.Lock()
tokens = {}  # access token -> Token
issued = []  # access tokens, in order
hits = {}  # path -> requests
auth_methods = []  # how the client authenticated, per token request


class Client(ClientMixin):
    def __init__(self, client_id, client_secret):
        self.client_id = client_id
        self.client_secret = client_secret

    def get_client_id(self):
        return self.client_id

    def get_default_redirect_uri(self):
        return None

    def get_allowed_scope(self, scope):
        if not scope:
            return ""
        allowed = {"read", "write"}
        return " ".join(s for s in scope.split() if s in allowed)

    def check_redirect_uri(self, redirect_uri):
        return False

    def check_client_secret(self, client_secret):
        return secrets.compare_digest(self.client_secret, client_secret)

    def check_endpoint_auth_method(self, method, endpoint):
        auth_methods.append(method)
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type):
        return False

    def check_grant_type(self, grant_type):
        return grant_type == "client_credentials"


class Token(TokenMixin):
    def __init__(self, client, data):
        self.client = client
        self.access_token = data["access_token"]
        self.scope = data.get("scope", "")
        self.expires_in = data.get("expires_in", 0)
        self.issued_at = time.time()
        self.revoked = False

    def check_client(self, client):
        return client.get_client_id() == self.client.get_client_id()

    def get_scope(self):
        return self.scope

    def get_expires_in(self):
        return self.expires_in

    def is_expired(self):
        return time.time() >= self.issued_at + self.expires_in

    def is_revoked(self):
        return self.revoked


class Grant(grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


class Validator(BearerTokenValidator):
    def authenticate_token(self, token_string):
        with lock:
            return tokens.get(token_string)


CLIENT = Client(client_id, client_secret)

app = Flask(__name__)
app.config["OAUTH2_TOKEN_EXPIRES_IN"] = {"client_credentials": expires_in}
# A marker the tests look for in logs: a token must never reach one.
app.config["OAUTH2_ACCESS_TOKEN_GENERATOR"] = lambda *args, **kwargs: "tok-SeCrEt-" + secrets.token_hex(16)


def query_client(cid):
    return CLIENT if cid == CLIENT.client_id else None


def save_token(data, req):
    with lock:
        tokens[data["access_token"]] = Token(req.client, data)
        issued.append(data["access_token"])


server = AuthorizationServer(app, query_client=query_client, save_token=save_token)
server.register_grant(Grant)
require_oauth = ResourceProtector()
require_oauth.register_token_validator(Validator())


@app.before_request
def count():
    with lock:
        hits[request.path] = hits.get(request.path, 0) + 1


@app.route("/oauth/token", methods=["POST"])
def issue_token():
    return server.create_token_response()


@app.route("/v1/whoami", methods=["GET", "POST", "PUT"])
@require_oauth()
def whoami():
    from authlib.integrations.flask_oauth2 import current_token

    return jsonify(
        ok=True,
        client=current_token.client.get_client_id(),
        scope=current_token.scope,
        body=request.get_data(as_text=True),
    )


@app.route("/v1/echo")
@require_oauth()
def echo():
    token = request.headers.get("Authorization", "")
    resp = jsonify(ok=True, authorization=token)
    resp.headers["X-Seen-Authorization"] = token
    return resp


@app.route("/v1/denied", methods=["GET", "POST"])
def denied():
    return jsonify(error="invalid_token"), 401, {"WWW-Authenticate": 'Bearer error="invalid_token"'}


@app.route("/_test/stats")
def stats():
    with lock:
        return jsonify(issued=len(issued), tokens=list(issued), hits=dict(hits), auth=list(auth_methods))


@app.route("/_test/revoke", methods=["POST"])
def revoke():
    with lock:
        for token in tokens.values():
            token.revoked = True
    return jsonify(ok=True)


context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
https = make_server("127.0.0.1", 0, app, threaded=True, ssl_context=context)
http = make_server("127.0.0.1", 0, app, threaded=True)
threading.Thread(target=http.serve_forever, daemon=True).start()
with open(port_file + ".tmp", "w") as f:
    f.write(f"{https.server_port} {http.server_port}")
os.rename(port_file + ".tmp", port_file)
https.serve_forever()
