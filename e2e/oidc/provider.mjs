// A real OpenID Connect provider (node-oidc-provider, the certified one) standing in for Okta
// in tests: discovery, JWKS, authorization code with PKCE, ID tokens with name, email and
// groups, and JWT access tokens for the shop's API (audience `api://ekart`, as an Okta
// authorization server issues them). Anyone can sign in as anyone through its development
// login page; accounts whose name starts with "admin" are in the group "ekart-admins".
//
// It signs with an RSA key made at start. With OIDC_SIGNING_KEY_FILE set it also writes that
// key (kid, PKCS#8 PEM, and the public key's PEM) there, so tests can forge tokens the provider would have signed and
// check that the shop still refuses the ones with a wrong claim.
//
//   OIDC_PORT=19300 OIDC_CLIENT_SECRET=… [OIDC_SIGNING_KEY_FILE=…] node e2e/oidc/provider.mjs
import { generateKeyPairSync, randomUUID } from "node:crypto";
import { writeFileSync } from "node:fs";
import Provider from "oidc-provider";

const port = Number(process.env.OIDC_PORT || 19300);
const secret = process.env.OIDC_CLIENT_SECRET;
if (!secret) {
  console.error("set OIDC_CLIENT_SECRET (any value; the shop under test gets the same)");
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;
/** The audience of access tokens for the shop's API. */
const apiAudience = "api://ekart";

const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
const kid = randomUUID();
const signingKey = { ...privateKey.export({ format: "jwk" }), kid, use: "sig", alg: "RS256" };
if (process.env.OIDC_SIGNING_KEY_FILE) {
  const pem = privateKey.export({ format: "pem", type: "pkcs8" });
  const public_pem = publicKey.export({ format: "pem", type: "spki" });
  writeFileSync(process.env.OIDC_SIGNING_KEY_FILE, JSON.stringify({ kid, pem, public_pem }), {
    mode: 0o600,
  });
}

const groupsOf = (id) => (id.startsWith("admin") ? ["ekart-admins"] : ["customers"]);

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: process.env.OIDC_CLIENT_ID || "ekart",
      client_secret: secret,
      // A "native" client's loopback redirect may use any port (RFC 8252): shops under test
      // listen on random ones.
      application_type: "native",
      redirect_uris: ["http://127.0.0.1/auth/callback"],
      post_logout_redirect_uris: ["http://127.0.0.1/"],
      response_types: ["code"],
      grant_types: ["authorization_code"],
      token_endpoint_auth_method: "client_secret_basic",
    },
    {
      // A public API client (a script, a mobile app): code flow with PKCE, no secret.
      client_id: "ekart-cli",
      application_type: "native",
      redirect_uris: ["http://127.0.0.1/callback"],
      response_types: ["code"],
      grant_types: ["authorization_code"],
      token_endpoint_auth_method: "none",
    },
  ],
  jwks: { keys: [signingKey] },
  pkce: { required: () => true },
  claims: { openid: ["sub"], profile: ["name"], email: ["email"], groups: ["groups"] },
  // Put the requested claims in the ID token itself, as Okta does with a groups claim.
  conformIdTokenClaims: false,
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    // Access tokens for the shop's API are JWTs with its audience.
    resourceIndicators: {
      enabled: true,
      defaultResource: () => apiAudience,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: "openid profile email groups",
        audience: apiAudience,
        accessTokenFormat: "jwt",
        jwt: { sign: { alg: "RS256" } },
      }),
    },
  },
  // Okta puts a groups claim in access tokens through a custom claim; so does this.
  async extraTokenClaims(_ctx, token) {
    if (token.kind === "AccessToken" && token.accountId) {
      return { groups: groupsOf(token.accountId) };
    }
    return undefined;
  },
  cookies: { keys: ["test-provider-cookie-key"] },
  async findAccount(_ctx, id) {
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          name: id,
          email: `${id.toLowerCase()}@example.com`,
          groups: groupsOf(id),
        };
      },
    };
  },
});

provider.listen(port, "127.0.0.1", () => {
  console.log(`OIDC provider at ${issuer}/.well-known/openid-configuration`);
});
