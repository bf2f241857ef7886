//! The five services of the original Ekart, as modules of one binary. Each owns its schema and
//! migrations and talks to the others over the bus or through their public interfaces.

pub mod frontend;
pub mod order;
pub mod payment;
pub mod stock;
pub mod user;

use crate::config::Module;

impl Module {
    /// The paths a gateway routes to a module in another process: every path of its OpenAPI
    /// description (dev sign-in's included), and the user module's browser sign-in flow, which
    /// is not part of the JSON API. None for the modules that only run beside a gateway.
    pub fn paths(self) -> Vec<String> {
        let mut paths: Vec<String> = self.openapi(true).paths.paths.into_keys().collect();
        if self == Module::User {
            paths.extend(user::oidc::PATHS.iter().map(|p| p.to_string()));
        }
        paths
    }

    /// The OpenAPI description of a module's API (`dev_sign_in`: the user module's includes
    /// `POST /auth/dev/token`), for a gateway that routes it to another process.
    pub fn openapi(self, dev_sign_in: bool) -> utoipa::openapi::OpenApi {
        match self {
            Module::Stock => stock::api().into_openapi(),
            Module::Order => order::api().into_openapi(),
            Module::Payment => payment::api().into_openapi(),
            Module::User => {
                let mut spec = user::api().into_openapi();
                spec.merge(user::signin::session_api().into_openapi());
                if dev_sign_in {
                    spec.merge(user::signin::dev_api().into_openapi());
                }
                spec
            }
            Module::Gateway | Module::Frontend => utoipa::openapi::OpenApi::default(),
        }
    }
}
