-- The ID token an OIDC sign-in was made with, sent back to the provider as `id_token_hint`
-- when the shopper signs out (Okta requires it to end its own session). Cleared when the
-- session ends.
ALTER TABLE sessions ADD COLUMN id_token TEXT;
