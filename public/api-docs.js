// Starts Swagger UI on /api/docs. A separate file, because the page's CSP allows no inline script.
(function () {
  var el = document.getElementById('swagger-ui');
  window.ui = SwaggerUIBundle({
    url: el.getAttribute('data-spec-url'),
    domNode: el,
    deepLinking: true,
    // The default validator badge would fetch from validator.swagger.io; nothing leaves this server.
    validatorUrl: null,
    persistAuthorization: false,
    displayRequestDuration: true,
    docExpansion: 'list',
    defaultModelsExpandDepth: 0,
  });
})();
