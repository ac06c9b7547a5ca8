/* catdog: starts Swagger UI on /docs. A file of its own, not an inline script: the
 * Content-Security-Policy lets no inline script run (FastAPI's default /docs page has one).
 * The OpenAPI URL comes from the page (data-openapi-url on #swagger-ui).
 */
(function () {
  "use strict";

  const root = document.getElementById("swagger-ui");
  window.ui = window.SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    validatorUrl: null,
    presets: [window.SwaggerUIBundle.presets.apis, window.SwaggerUIBundle.SwaggerUIStandalonePreset],
  });
})();
