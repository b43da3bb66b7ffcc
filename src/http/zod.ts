/**
 * zod with the OpenAPI extension (`.openapi()`), so the schemas the routes validate with can
 * also describe themselves in the OpenAPI document. Import `z` from here, not from 'zod'.
 */
import { extendZodWithOpenApi } from '@asteasolutions/zod-to-openapi';
import { z } from 'zod';

extendZodWithOpenApi(z);

export { z };
