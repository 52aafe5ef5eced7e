// Package deploy holds ocistow-lambda's CloudFormation template
// (template.yaml) and its offline checks: the function's shape, and an IAM
// role of least privilege.
package deploy
