//! The five services of the original Ekart, as modules of one binary. Each owns its schema and
//! migrations and talks to the others over the bus or through their public interfaces.

pub mod frontend;
pub mod order;
pub mod payment;
pub mod stock;
pub mod user;

use crate::config::Module;

impl Module {
    /// The HTTP API of a module that can run in another process (none for the others).
    pub fn paths(self) -> &'static [&'static str] {
        match self {
            Module::Stock => stock::PATHS,
            Module::Order => order::PATHS,
            Module::Payment => payment::PATHS,
            Module::User => user::PATHS,
            Module::Gateway | Module::Frontend => &[],
        }
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
