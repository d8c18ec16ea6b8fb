//! `/api/v1/keys`: create (master key), list (`keys.read`), revoke, roll and update
//! (`keys.write`). A master key holds every scope; a project key acts on its own project's keys.

mod change;
mod create;
mod scopes;
mod update;
mod view;

use actix_web::web;

use crate::metrics::counted_resource;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        counted_resource("/keys")
            .route(web::post().to(create::create_key))
            .route(web::get().to(create::list_keys)),
    )
    .service(
        counted_resource("/keys/{id}")
            .route(web::delete().to(change::revoke_key))
            .route(web::patch().to(update::update_key)),
    )
    .service(counted_resource("/keys/{id}/roll").route(web::post().to(change::roll_key)));
}
